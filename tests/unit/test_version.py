"""One version: pyproject.toml's. The packages read it from the installed metadata; the Helm
chart must spell it literally, so this test keeps Chart.yaml's appVersion from drifting."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import codemode_operator
import codemode_session
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def test_the_installed_package_is_this_checkout() -> None:
    # After a version bump, a stale install (pip install -e . not re-run) says so here
    # rather than as a wrong version in /health.
    assert version("codemode") == _pyproject_version()


def test_packages_report_the_pyproject_version() -> None:
    assert codemode_session.__version__ == _pyproject_version()
    assert codemode_operator.__version__ == _pyproject_version()


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((ROOT / "helm" / "codemode" / "Chart.yaml").read_text())
    assert str(chart["appVersion"]) == _pyproject_version(), (
        "helm/codemode/Chart.yaml appVersion must equal pyproject.toml's version "
        "(bump the chart's version too)"
    )


def test_unknown_attributes_still_raise() -> None:
    with pytest.raises(AttributeError):
        _ = codemode_session.no_such_name
    with pytest.raises(AttributeError):
        _ = codemode_operator.no_such_name
