"""The API of the three kinds: pydantic models are the single source of the CRD schemas."""
