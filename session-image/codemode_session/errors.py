"""Errors that carry a message meant for the user (HTTP 4xx, CLI one-liners)."""


class CodemodeError(Exception):
    """Base of every error whose message is safe and useful to show a user."""


class ValidationError(CodemodeError, ValueError):
    """Input is malformed: a name, a spec, a workflow source."""


class NotFoundError(CodemodeError, KeyError):
    """The named object does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we do not want that
        return str(self.args[0]) if self.args else "not found"


class ForbiddenError(CodemodeError):
    """The operation is switched off or not allowed for this caller."""


class StorageUnavailableError(CodemodeError):
    """The storage backend (Redis, disk) cannot be reached."""


class ConflictError(CodemodeError):
    """The change conflicts with who owns the object (a library-managed workflow)."""


class QuotaExceededError(CodemodeError):
    """A write would take the workspace past one of its storage limits (HTTP 413)."""
