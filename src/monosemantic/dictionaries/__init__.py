"""dictionaries stage."""
