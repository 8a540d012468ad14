"""Least-privilege policy recommendation from observed flows."""
