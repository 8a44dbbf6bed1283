"""A real local Kubernetes for tests, built without any registry (docs/architecture.md §6)."""
