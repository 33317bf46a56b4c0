"""circuits stage."""
