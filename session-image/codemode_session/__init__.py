"""codemode session runtime: storage, namespaces, executor, session server, store CLI."""

__version__ = "0.1.0"
