"""codemode session runtime: storage, namespaces, executor, session server, store CLI."""


def __getattr__(name: str) -> str:
    """`__version__`: the installed distribution's, so pyproject.toml is its one source.
    Looked up on first use: worker processes import this package and never need it."""
    if name == "__version__":
        from importlib.metadata import version

        return version("codemode")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
