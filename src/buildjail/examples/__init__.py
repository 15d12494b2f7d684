"""Small built-in examples to run inside the sandbox."""
