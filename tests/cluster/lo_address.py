"""NODE_HOST_IP on `lo` is shared by the local node cluster and kind (pods of both reach
the host there). Whichever cluster added it owns it; one that goes down while the other
still runs hands the ownership over (in the other's host-state file), so the last one
down removes it and none is left behind, whatever the order of ups and downs."""

from __future__ import annotations

import json
from pathlib import Path

from . import paths

STATE_FILE = "host-state.json"  # each cluster's record of what its `up` changed


def state_file(mode: str) -> Path:
    return paths.run_dir(mode) / STATE_FILE


def hand_over(to_mode: str) -> bool:
    """Make the running cluster `to_mode` the owner; False when it has no state (down)."""
    path = state_file(to_mode)
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    state["lo_ip_added"] = True
    path.write_text(json.dumps(state))
    return True
