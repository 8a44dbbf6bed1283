"""How git's stderr becomes one line: HTTP statuses are read where git reports them, never
from digits of the URL (a port such as 40177 once made a missing repository read as an
authentication failure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from codemode_session.store.gitfetch import GitAuth, GitAuthError, GitError, _Git


def _git(url: str) -> _Git:
    return _Git(Path("/nonexistent"), url, GitAuth(), timeout=5)


@pytest.mark.parametrize(
    ("url", "stderr", "auth"),
    [
        (
            "http://127.0.0.1:40177/missing.git",
            "fatal: repository 'http://127.0.0.1:40177/missing.git/' not found\n",
            False,
        ),
        (
            "http://127.0.0.1:14010/repo.git",
            "fatal: unable to access 'http://127.0.0.1:14010/repo.git/': "
            "The requested URL returned error: 404\n",
            False,
        ),
        (
            "http://127.0.0.1:8080/repo.git",
            "error: RPC failed; HTTP 401 curl 22 The requested URL returned error: 401\n",
            True,
        ),
        (
            "http://127.0.0.1:4030/repo.git",
            "fatal: unable to access 'http://127.0.0.1:4030/repo.git/': "
            "The requested URL returned error: 403\n",
            True,
        ),
        (
            "http://127.0.0.1:8080/repo.git",
            "fatal: Authentication failed for 'http://127.0.0.1:8080/repo.git/'\n",
            True,
        ),
    ],
)
def test_statuses_come_from_git_s_words_not_the_url(url: str, stderr: str, auth: bool) -> None:
    error = _git(url).error(stderr.encode(), "fetch")
    assert isinstance(error, GitAuthError) is auth, str(error)
    if not auth:
        assert isinstance(error, GitError) and "not found" in str(error)
