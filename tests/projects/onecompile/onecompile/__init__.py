"""The package of the one-compile test project."""
