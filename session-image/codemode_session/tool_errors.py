"""The error every kind of tool raises when it cannot give an answer."""

from __future__ import annotations

from codemode_session.errors import CodemodeError


class ToolError(CodemodeError):
    """A tool failed: a command exited non-zero, timed out or could not start; an MCP
    server or HTTP API refused, failed or did not answer in time."""
