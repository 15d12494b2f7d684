"""A minimal package."""

VALUE = 42
