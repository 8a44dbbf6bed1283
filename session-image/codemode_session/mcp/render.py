"""What the tools answer, as text an agent reads.

py-code-mode's MCP tools answer text: a run as its value and output, everything else as
JSON. The same shapes here, so prompts written for it keep working.
"""

from __future__ import annotations

import json
from typing import Any

from codemode_session.results import ExecuteResult


def as_json(data: Any) -> str:
    """JSON text even for an empty list, which some clients would otherwise show as nothing."""
    return json.dumps(data, ensure_ascii=False, default=str)


def run_text(result: ExecuteResult, notes: list[str]) -> str:
    """py-code-mode's run_code text ("Error: ..." or the value, then "Stdout:"), plus the
    stderr and what happened to the session's variables, which py-code-mode never had."""
    parts: list[str] = []
    if result.error is not None:
        parts.append(f"Error: {result.error}")
    elif result.value is not None:
        value = result.value
        parts.append(value if isinstance(value, str) else as_json(value))
    if result.stdout:
        parts.append(f"Stdout:\n{result.stdout}")
    if result.stderr:
        parts.append(f"Stderr:\n{result.stderr}")
    parts.extend(f"Note: {note}" for note in [*notes, *_state_notes(result)])
    return "\n\n".join(parts) or "(no output)"


def _state_notes(result: ExecuteResult) -> list[str]:
    """A new interpreter ran this code: say why, and whether the variables came back."""
    if not result.worker_restarted and not result.state_released:
        return []
    why = f" ({result.state_released})" if result.state_released else ""
    restored = result.state_restored
    if restored is None:
        return [f"the session's interpreter was restarted{why}: earlier variables are gone"]
    notes = [f"the session's interpreter was restarted{why}; its saved variables were restored"]
    lost = restored.get("lost") or {}
    if lost:
        notes.append("not restored: " + ", ".join(f"{k} ({v})" for k, v in lost.items()))
    return notes
