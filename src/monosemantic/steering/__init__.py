"""Steering: generation with a feature added, set, scaled or ablated, beside the plain text."""
