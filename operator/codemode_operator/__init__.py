"""codemode operator: Workspace, CodeSession and WorkflowLibrary reconciled by kopf."""

GROUP = "codemode.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PREFIX = "codemode.dev"  # finalizer, annotation and label prefix


def __getattr__(name: str) -> str:
    """`__version__`: the installed distribution's (pyproject.toml is its one source; VERSION
    above is the API version of the CRDs). Looked up on first use."""
    if name == "__version__":
        from importlib.metadata import version

        return version("codemode")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
