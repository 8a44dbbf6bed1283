"""Run one cell of agent code the way a notebook does.

Top-level `await` works, the value of a trailing expression is returned,
stdout/stderr are captured up to a cap, and exceptions become a traceback of
the agent's own frames rather than ours.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import dataclasses
import inspect
import io
import math
import sys
import traceback
from typing import Any

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
MAX_VALUE_CHARS = 1024 * 1024


class CappedWriter(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and notes the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.limit - self.size
        if room > 0:
            kept = text[:room]
            self.parts.append(kept)
            self.size += len(kept)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        out = "".join(self.parts)
        if self.dropped:
            out += f"\n[output truncated: {self.dropped} more characters]"
        return out


def to_jsonable(value: Any, depth: int = 0) -> Any:
    """The JSON form of a result: containers recurse, anything else is its repr."""
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) or len(value) <= MAX_VALUE_CHARS else (
            value[:MAX_VALUE_CHARS] + "...[truncated]")
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 20:
        if isinstance(value, list | tuple):
            return [to_jsonable(v, depth + 1) for v in value[:10000]]
        if isinstance(value, set | frozenset):
            return [to_jsonable(v, depth + 1) for v in list(value)[:10000]]
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {k: to_jsonable(v, depth + 1) for k, v in list(value.items())[:10000]}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_jsonable(dataclasses.asdict(value), depth + 1)
    text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "...[truncated]"


def _format_error(exc: BaseException) -> str:
    tb = exc.__traceback__
    # Drop our own frames: show the agent where its code failed.
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


class CellRunner:
    """Holds one session's globals and event loop across runs."""

    def __init__(self, namespace: dict[str, Any], output_limit: int) -> None:
        self.globals = namespace
        self.output_limit = output_limit
        self.loop = asyncio.new_event_loop()
        self.count = 0

    def _resolve(self, result: Any) -> Any:
        if inspect.iscoroutine(result):
            return self.loop.run_until_complete(result)
        return result

    def run(self, code: str) -> dict[str, Any]:
        self.count += 1
        filename = f"<cell {self.count}>"
        out = CappedWriter(self.output_limit)
        err = CappedWriter(self.output_limit)
        value: Any = None
        error: str | None = None
        error_type: str | None = None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                tree = compile(code, filename, "exec", flags=FLAGS | ast.PyCF_ONLY_AST)
                ends_with_expr = bool(tree.body) and isinstance(tree.body[-1], ast.Expr)
                last = tree.body.pop() if ends_with_expr else None
                if tree.body:
                    self._resolve(eval(compile(tree, filename, "exec", flags=FLAGS), self.globals))
                if last is not None:
                    expr = ast.Expression(last.value)
                    value = self._resolve(
                        eval(compile(expr, filename, "eval", flags=FLAGS), self.globals))
            except SystemExit as exc:
                error_type = "SystemExit"
                error = f"SystemExit: {exc.code} (exit() does not end the session; use /reset)"
            except BaseException as exc:  # agent code may raise anything
                error_type = type(exc).__name__
                error = _format_error(exc)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
        return {
            "value": to_jsonable(value) if error is None else None,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "error": error,
            "error_type": error_type,
        }
