"""A real MCP server (the SDK's MCPServer, FastMCP's successor) for the MCP-tool tests:
`python -m tests.integration.mcp_tool_server [stdio | streamable-http PORT]`."""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server: MCPServer = MCPServer("fixture-tools", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two whole numbers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Turn text into capital letters."""
    return text.upper()


@server.tool()
def secret_word() -> str:
    """The value of FIXTURE_WORD in the server's environment."""
    return os.environ.get("FIXTURE_WORD", "(unset)")


@server.tool()
def fail(reason: str) -> str:
    """Always fails, with the reason given (the SDK's ToolError: its message is shown)."""
    raise ToolError(reason)


@server.tool()
def slow(seconds: float) -> str:
    """Sleeps, then answers."""
    time.sleep(seconds)
    return "slept"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "streamable-http":
        server.run("streamable-http", port=int(sys.argv[2]))
    else:
        server.run("stdio")
