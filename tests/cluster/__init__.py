"""A real local Kubernetes cluster for tests, built without any registry (DESIGN.md §6)."""
