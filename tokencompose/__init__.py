"""tokencompose."""
