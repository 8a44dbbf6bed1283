"""JSON answers that are always valid JSON and always encodable.

Answers may quote what callers or other clients stored: NaN and infinities
(Python's JSON parser accepts them) and lone surrogates (JSON allows "\\udcff",
UTF-8 cannot encode it) must not turn an answer into a 500.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi.responses import JSONResponse


def finite_json(value: Any) -> Any:
    """`value` with NaN and infinities (not JSON) replaced by their names as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped, so text UTF-8 cannot encode cannot break a response."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        except ValueError:  # NaN or Infinity somewhere in the content
            text = json.dumps(
                finite_json(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
            )
        return text.encode()
