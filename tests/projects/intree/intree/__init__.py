"""A package built by an in-tree backend, with no build requirements."""
