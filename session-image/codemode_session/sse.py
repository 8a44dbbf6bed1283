"""Reading server-sent events (a streamed `/execute`), line by line, with no HTTP
library of its own: the Python clients and `codemode exec`'s fast path share it."""

from __future__ import annotations

import json
from typing import Any


class EventReader:
    """Feed it the response's lines; it hands back (event name, parsed JSON data) each
    time an event is complete (a blank line)."""

    def __init__(self) -> None:
        self.name = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, Any] | None:
        line = line.rstrip("\r\n")
        if line == "":
            if not self.data:
                return None
            found = (self.name, json.loads("\n".join(self.data)))
            self.name, self.data = "message", []
            return found
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            self.name = value
        elif field == "data":
            self.data.append(value)
        return None
