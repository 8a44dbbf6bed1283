"""When a workflow search lists the workspace again (search/service.py): not within the
refresh time; up to twice it, the search answers from its index while one background
task lists; past that, or after this server's own write, it lists before answering."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from codemode_session.search import service
from codemode_session.workflow_model import Workflow, parse_workflow

REFRESH = 0.3


class Listing:
    """A storage that only lists workflows, and counts how often it was asked."""

    def __init__(self) -> None:
        self.description = f"listing-{uuid.uuid4().hex}"
        self.workflows: list[Workflow] = []
        self.listed = 0

    def add(self, name: str, description: str) -> None:
        source = f'"""{description}"""\n\n\nasync def run() -> None:\n    return None\n'
        self.workflows.append(parse_workflow(name, source))

    async def list_workflows(self) -> list[Workflow]:
        self.listed += 1
        await asyncio.sleep(0.01)
        return list(self.workflows)


async def _names(storage: Listing, query: str) -> list[str]:
    found = await service.search_workflows(storage, query)  # type: ignore[arg-type]
    return [w.name for w in found]


@pytest.fixture(autouse=True)
def _lexical(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEMODE_SEARCH_MODEL", "off")
    monkeypatch.setenv(service.REFRESH_ENV, str(REFRESH))


def test_a_search_past_the_refresh_time_answers_at_once_and_lists_in_the_background() -> None:
    async def scenario() -> None:
        storage = Listing()
        storage.add("parse_csv", "Parse a CSV file into rows.")
        assert await _names(storage, "csv") == ["parse_csv"]
        assert storage.listed == 1
        storage.add("csv_stats", "Statistics of a CSV column.")  # another writer
        assert await _names(storage, "csv") == ["parse_csv"]  # within the refresh time
        assert storage.listed == 1
        await asyncio.sleep(REFRESH * 1.2)
        # Past it: this search answers from the index it has, and one listing starts.
        assert await _names(storage, "csv") == ["parse_csv"]
        assert await _names(storage, "csv") == ["parse_csv"]
        await asyncio.sleep(0.05)
        assert storage.listed == 2
        assert await _names(storage, "csv") == ["csv_stats", "parse_csv"]
        storage.add("csv_join", "Join two CSV files.")
        await asyncio.sleep(REFRESH * 2.2)
        # Past twice the refresh time (an idle server): listed before answering.
        assert await _names(storage, "csv") == ["csv_join", "csv_stats", "parse_csv"]
        assert storage.listed == 3

    asyncio.run(scenario())


def test_this_servers_own_write_shows_in_the_next_search() -> None:
    async def scenario() -> None:
        storage = Listing()
        storage.add("parse_csv", "Parse a CSV file into rows.")
        assert await _names(storage, "csv") == ["parse_csv"]
        storage.add("csv_stats", "Statistics of a CSV column.")
        await service.workflows_changed(storage, saved=[storage.workflows[-1]])  # type: ignore[arg-type]
        assert await _names(storage, "csv") == ["csv_stats", "parse_csv"]
        assert storage.listed == 2

    asyncio.run(scenario())
