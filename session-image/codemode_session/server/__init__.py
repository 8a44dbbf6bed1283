"""The HTTP session server (py-code-mode SessionServer compatible)."""
