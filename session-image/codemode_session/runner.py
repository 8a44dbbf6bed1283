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
import json
import math
import sys
import traceback
from collections.abc import Callable
from functools import partial
from typing import Any

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
MAX_VALUE_CHARS = 1024 * 1024
MAX_INT_BITS = 4096  # about 1233 decimal digits; larger ints are returned as text


class CappedWriter(io.TextIOBase):
    """A text stream that keeps the first `limit` characters and notes the rest."""

    def __init__(self, limit: int, sink: Callable[[str], None] | None = None) -> None:
        self.limit = limit
        self.sink = sink  # also gets each kept piece as it is written (a streamed run)
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # as sys.stdout does; bytes would break getvalue()
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.limit - self.size
        if room > 0:
            kept = text[:room]
            self.parts.append(kept)
            self.size += len(kept)
            if self.sink is not None:
                self.sink(kept)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        out = clean_text("".join(self.parts))
        if self.dropped:
            out += f"\n[output truncated: {self.dropped} more characters]"
        return out


def clean_text(text: str) -> str:
    """Text that encodes as UTF-8: lone surrogates become backslash escapes."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _short(text: str) -> str:
    text = clean_text(text)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "...[truncated]"


def _budget_left(value: Any, budget: int) -> int:
    """What is left of `budget` after a rough size of a JSON value; negative when over."""
    stack = [value]
    while stack and budget >= 0:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 4
        elif isinstance(item, list):
            budget -= 2 + len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            budget -= 2 + 4 * len(item)
            for key, val in item.items():
                budget -= len(key)
                stack.append(val)
        else:
            budget -= 24
    return budget


def bounded(value: Any) -> Any:
    """A JSON value of about MAX_VALUE_CHARS at most, else the start of its JSON text.

    A list holding one big string many times is small in memory but not as JSON,
    so the encoded size is what counts; encoding stops once over the limit.
    """
    if value is None or isinstance(value, bool | float | str):
        return value
    if isinstance(value, int) and value.bit_length() <= MAX_INT_BITS:
        return value
    if _budget_left(value, MAX_VALUE_CHARS) >= 0:
        return value
    parts: list[str] = []
    size = 0
    for chunk in json.JSONEncoder().iterencode(value):
        parts.append(chunk)
        size += len(chunk)
        if size > MAX_VALUE_CHARS:
            break
    return "".join(parts)[:MAX_VALUE_CHARS] + "...[truncated]"


class _Budget:
    """Characters a result may still take; once spent, leaves become a marker."""

    __slots__ = ("left",)

    def __init__(self, chars: int) -> None:
        self.left = chars

    def spend(self, text: str) -> str:
        if self.left <= 0:
            return "...[truncated]"
        self.left -= len(text)
        return text


def json_key(key: Any) -> str:
    """A dict key as JSON writes it: {1: 'a'} is {"1": "a"}, True "true", None "null"."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    return str(key)


def to_jsonable(value: Any, depth: int = 0, budget: _Budget | None = None) -> Any:
    """The JSON form of a result, as py-code-mode's server gives it: lists, tuples and
    frozensets are lists, dicts objects (keys as JSON writes them), NaN null, and
    anything else (a set too) its str().

    The whole result is built within about twice MAX_VALUE_CHARS (`bounded` cuts it
    to size), so `[big] * 10_000` costs no more memory than `big`.
    """
    if budget is None:
        budget = _Budget(2 * MAX_VALUE_CHARS)
    if value is None or isinstance(value, bool):
        budget.left -= 8
        return value
    if isinstance(value, int):
        if value.bit_length() <= MAX_INT_BITS:
            budget.left -= 8
            return value
        # JSON readers (the server's among them) refuse ints of over 4300 digits.
        try:
            text = repr(value)
        except ValueError:  # over sys.get_int_max_str_digits()
            text = f"<int of {value.bit_length()} bits: too many digits to print>"
        return budget.spend(_short(text))
    if isinstance(value, str):
        return budget.spend(_short(value))
    if isinstance(value, float):
        budget.left -= 8
        # NaN and infinities are not JSON: null, as py-code-mode's server answers them.
        return value if math.isfinite(value) else None
    if depth < 20 and budget.left > 0:
        if isinstance(value, list | tuple | frozenset):
            return [to_jsonable(v, depth + 1, budget) for v in list(value)[:10000]]
        if isinstance(value, dict):
            return {
                budget.spend(clean_text(json_key(k))): to_jsonable(v, depth + 1, budget)
                for k, v in list(value.items())[:10000]
            }
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return to_jsonable(dataclasses.asdict(value), depth + 1, budget)
    if budget.left <= 0:
        return "...[truncated]"
    if isinstance(value, bytes | bytearray) and len(value) > MAX_VALUE_CHARS // 4:
        return budget.spend(repr(bytes(value[: MAX_VALUE_CHARS // 4])) + "...[truncated]")
    return budget.spend(_short(str(value)))


def _format_error(exc: BaseException) -> str:
    tb = exc.__traceback__
    # Drop our own frames: show the agent where its code failed.
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<"):
        tb = tb.tb_next
    text = clean_text("".join(traceback.format_exception(type(exc), exc, tb)).rstrip())
    if len(text) > MAX_VALUE_CHARS:  # keep the start and the exception line at the end
        half = MAX_VALUE_CHARS // 2
        text = f"{text[:half]}\n...[truncated]...\n{text[-half:]}"
    return text


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

    def run(self, code: str, sink: Callable[[str, str], None] | None = None) -> dict[str, Any]:
        """Run a cell; `sink(stream, text)` also gets its output as it is printed."""
        self.count += 1
        asyncio.set_event_loop(self.loop)  # workflows called from plain code run on it too
        filename = f"<cell {self.count}>"
        out = CappedWriter(self.output_limit, None if sink is None else partial(sink, "stdout"))
        err = CappedWriter(self.output_limit, None if sink is None else partial(sink, "stderr"))
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
                        eval(compile(expr, filename, "eval", flags=FLAGS), self.globals)
                    )
                    # Inside the try: a __repr__ of the agent's may raise (or print).
                    value = bounded(to_jsonable(value))
            except SystemExit as exc:
                error_type = "SystemExit"
                error = _short(
                    f"SystemExit: {exc.code} (exit() does not end the session; use /reset)"
                )
            except BaseException as exc:  # agent code may raise anything
                error_type = type(exc).__name__
                error = _format_error(exc)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
        return {
            "value": value if error is None else None,
            "stdout": out.getvalue(),
            "stderr": err.getvalue(),
            "error": error,
            "error_type": error_type,
        }
