"""Pure functions from a resource to the manifests it owns: no I/O, easy to test."""
