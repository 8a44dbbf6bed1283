"""`codemode mcp`: py-code-mode's MCP tools and session tools over stdio.

The server (`server.py`) speaks MCP with the official SDK; a backend (`backends.py`)
maps each call onto a session server: a plain one (`--url`) or a CodeSession on
Kubernetes (`--codesession`). Nothing here imports the SDK at import time, so the CLI
can say which extra is missing.
"""
