"""The shared NODE_HOST_IP on lo: the last of the two clusters to go down removes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster import lo_address


def test_ownership_goes_to_the_cluster_still_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEMODE_CACHE", str(tmp_path))
    assert lo_address.hand_over("node") is False  # down: nobody to hand it to
    node_state = lo_address.state_file("node")
    node_state.parent.mkdir(parents=True)
    node_state.write_text(json.dumps({"lo_ip_added": False, "ip_forward": "0"}))
    assert lo_address.hand_over("node") is True
    assert json.loads(node_state.read_text()) == {"lo_ip_added": True, "ip_forward": "0"}
