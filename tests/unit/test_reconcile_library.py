"""WorkflowLibrary reconcile paths on the in-memory Kube: sync Jobs and their results,
interval and backoff, suspend, a missing Secret, and pruning on delete."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from codemode_operator.api.workflowlibrary import WorkflowLibrarySpec, WorkflowLibraryStatus
from codemode_operator.commit import LIBRARY, Committer
from codemode_operator.conditions import condition, iso
from codemode_operator.kube import Obj
from codemode_operator.reconcile import Retry
from codemode_operator.reconcile import library as rec
from codemode_operator.settings import OperatorConfig
from codemode_operator.vocabulary import ConditionType
from kubernetes.client.exceptions import ApiException

from tests.unit.fake_kube import NS, FakeKube, library, workspace

CFG = OperatorConfig.from_env({})
RESULT = {
    "revision": "0123456789abcdef0123",
    "digest": "d" * 64,
    "count": 3,
    "added": 2,
    "updated": 1,
    "removed": 0,
}


@pytest.fixture
def kube() -> FakeKube:
    fake = FakeKube()
    fake.put("workspaces", workspace())
    return fake


@pytest.fixture
def events() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def committer(kube: FakeKube, events: list[tuple[str, str, str]]) -> Committer:
    return Committer(kube, lambda obj, type_, reason, msg: events.append((type_, reason, msg)))


def run(
    kube: FakeKube, committer: Committer, name: str = "lib", clock: Any = time.time
) -> WorkflowLibraryStatus:
    done = committer.commit(
        LIBRARY,
        kube.get("workflowlibraries", NS, name),
        lambda obj: rec.reconcile(kube, CFG, obj, clock),
    )
    assert done is not None
    return done.new


def conds(st: WorkflowLibraryStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in st.conditions}


def finish(
    kube: FakeKube,
    job: str,
    succeeded: bool = True,
    message: str | None = None,
    failed_condition: str | None = None,
) -> None:
    """The sync Job ends; its pod's termination message carries the bootstrap's result."""

    def done(obj: Obj) -> None:
        if failed_condition is not None:
            obj["status"] = {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": failed_condition,
                    }
                ]
            }
        else:
            obj["status"] = {"succeeded": 1} if succeeded else {"failed": 1}

    kube.edit("jobs", NS, job, done)
    if message is not None:
        kube.put(
            "pods",
            {
                "metadata": {"name": f"{job}-pod", "namespace": NS, "labels": {"job-name": job}},
                "status": {
                    "containerStatuses": [
                        {"state": {"running": {}}},
                        {"state": {"terminated": {"message": message}}},
                    ]
                },
            },
        )


def test_missing_workspace(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library(workspace_ref="nope"))
    st = run(kube, committer)
    assert conds(st)["Ready"] == ("False", "WorkspaceNotFound")
    assert conds(st)["Reconciling"] == ("True", "Progressing")
    assert conds(st)["Stalled"] == ("False", "NotStalled")
    assert kube.names("jobs") == []


def test_workspace_not_ready(kube: FakeKube, committer: Committer) -> None:
    kube.put("workspaces", workspace("raw", ready=False))
    kube.put("workflowlibraries", library(workspace_ref="raw"))
    assert conds(run(kube, committer))["Ready"] == ("False", "WorkspaceNotReady")


def test_sync_succeeds(
    kube: FakeKube, committer: Committer, events: list[tuple[str, str, str]]
) -> None:
    kube.put("workflowlibraries", library())
    st = run(kube, committer)
    job = st.job_name
    assert job and job.startswith("lib-sync-") and job.endswith("-1")
    assert kube.names("jobs") == [job] and st.attempts == 1 and st.last_attempt_time
    assert conds(st)["Ready"] == ("Unknown", "Syncing")
    assert conds(st)["Reconciling"] == ("True", "Progressing")
    assert st.observed_generation is None  # not synced yet: kstatus reads InProgress
    assert run(kube, committer) == st  # still running: nothing changes

    finish(kube, job, message="fetching\n" + json.dumps(RESULT))
    calls = len(kube.calls)
    st = run(kube, committer)
    assert st.job_name is None and st.failures == 0 and st.observed_generation == 1
    assert st.artifact is not None and (st.artifact.revision, st.artifact.count) == (
        RESULT["revision"],
        3,
    )
    assert (st.added, st.updated, st.removed) == (2, 1, 0)
    assert st.last_sync_time
    assert conds(st) == {
        "Ready": ("True", "Succeeded"),
        "Reconciling": ("False", "Succeeded"),
        "Stalled": ("False", "NotStalled"),
    }
    later = [c[0] for c in kube.calls[calls:]]
    assert later.index("patch_status") < later.index("delete_job")  # result on record first
    assert kube.names("jobs") == []
    assert events[-1] == ("Normal", "Succeeded", "published 3 workflow(s) at revision 0123456789ab")


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"succeeded": True, "message": "no result here"}, "no result here"),
        ({"succeeded": True}, "the sync Job ended without a result"),
        (
            {"succeeded": False, "message": "cloning\nerror: repository not found"},
            "error: repository not found",
        ),
        (
            {"failed_condition": "Job has reached the specified backoff limit"},
            "Job has reached the specified backoff limit",
        ),
    ],
)
def test_sync_fails(
    kube: FakeKube, committer: Committer, how: dict[str, Any], expected: str
) -> None:
    kube.put("workflowlibraries", library())
    job = run(kube, committer).job_name
    assert job
    finish(kube, job, **how)
    st = run(kube, committer)
    assert st.failures == 1 and st.job_name is None and st.observed_generation == 1
    assert conds(st)["Stalled"] == ("True", "SyncFailed")
    assert conds(st)["Ready"] == ("False", "SyncFailed")
    assert conds(st)["Reconciling"][0] == "False"
    stalled = condition(st.conditions, ConditionType.STALLED)
    assert stalled is not None
    assert stalled.message == f"{expected} (attempt 1; retrying with backoff)"
    assert kube.names("jobs") == []


def test_a_vanished_job_counts_as_a_failure(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library())
    job = run(kube, committer).job_name
    assert job
    kube.remove("jobs", NS, job)
    st = run(kube, committer)
    assert st.failures == 1
    assert (
        "the sync Job disappeared"
        in condition(
            st.conditions,  # type: ignore[union-attr]
            ConditionType.STALLED,
        ).message
    )


def test_a_failure_after_a_good_sync_keeps_ready_unknown(
    kube: FakeKube, committer: Committer
) -> None:
    kube.put("workflowlibraries", library(interval="1m"))
    job = run(kube, committer).job_name
    finish(kube, job, message=json.dumps(RESULT))  # type: ignore[arg-type]
    run(kube, committer)
    later = time.time() + 61
    job = run(kube, committer, clock=lambda: later).job_name
    assert job and job.endswith("-2")
    assert conds(kube_status(kube))["Ready"] == ("True", "Syncing")
    finish(kube, job, succeeded=False)
    st = run(kube, committer)
    assert conds(st)["Ready"] == ("Unknown", "SyncFailed")
    assert st.artifact is not None  # what was published stays


def kube_status(kube: FakeKube) -> WorkflowLibraryStatus:
    obj = kube.get("workflowlibraries", NS, "lib")
    assert obj is not None
    return LIBRARY.read(obj)


@pytest.mark.parametrize(
    ("failures", "interval", "wait"),
    [
        (1, 300, 5),
        (2, 300, 10),
        (3, 300, 20),
        (6, 300, 160),
        (7, 300, 300),
        (7, 3600, 320),
        (8, 3600, 600),
        (30, 3600, 600),
        (3, 12, 12),
    ],
)
def test_backoff(failures: int, interval: float, wait: float) -> None:
    assert rec.backoff(failures, interval) == wait


def test_due_after_backoff_then_interval() -> None:
    spec = WorkflowLibrarySpec.model_validate(
        {"workspaceRef": "ws", "source": {"url": "https://g/r.git"}, "interval": "5m"}
    )
    now = 1_000_000.0
    failing = WorkflowLibraryStatus(observedGeneration=1, failures=3, lastAttemptTime=iso(now - 19))
    assert not rec.due(failing, spec, 1, now)
    assert rec.due(failing, spec, 1, now + 1)
    assert rec.due(failing, spec, 2, now)  # a new generation syncs at once
    synced = WorkflowLibraryStatus(observedGeneration=1, failures=0, lastSyncTime=iso(now - 299))
    assert not rec.due(synced, spec, 1, now)
    assert rec.due(synced, spec, 1, now + 1)
    assert rec.due(WorkflowLibraryStatus(), spec, None, now)


def test_backoff_between_failed_syncs(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library())
    start = time.time()
    for attempt in (1, 2, 3):

        def at(t: float) -> Any:
            return lambda: t

        st = run(kube, committer, clock=at(start))
        job = st.job_name
        assert job and job.endswith(f"-{attempt}")
        finish(kube, job, succeeded=False)
        st = run(kube, committer, clock=at(start))
        assert st.failures == attempt
        wait = rec.backoff(attempt, 300)
        assert run(kube, committer, clock=at(start + wait - 2)).job_name is None
        start = start + wait + 1  # the next look is due


def test_a_spec_change_syncs_at_once(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library())
    job = run(kube, committer).job_name
    finish(kube, job, message=json.dumps(RESULT))  # type: ignore[arg-type]
    run(kube, committer)
    assert run(kube, committer).job_name is None  # within the interval
    kube.edit(
        "workflowlibraries",
        NS,
        "lib",
        lambda o: o["spec"]["source"].update(path="flows"),
        spec=True,
    )
    job = run(kube, committer).job_name
    assert job and job.endswith("-2")
    sync_args = kube.get("jobs", NS, job)["spec"]["template"]["spec"][  # type: ignore[index]
        "containers"
    ][0]["args"]
    assert sync_args[sync_args.index("--path") + 1] == "flows"


def test_suspend(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library(suspend=True))
    st = run(kube, committer)
    assert conds(st)["Reconciling"] == ("False", "Suspended")
    assert st.observed_generation == 1 and kube.names("jobs") == []


def test_missing_git_secret_stalls(kube: FakeKube, committer: Committer) -> None:
    kube.put(
        "workflowlibraries",
        library(source={"url": "https://g/r.git", "secretRef": {"name": "git"}}),
    )
    st = run(kube, committer)
    assert conds(st)["Stalled"] == ("True", "SecretNotFound")
    assert st.observed_generation == 1 and kube.names("jobs") == []
    kube.put(
        "secrets",
        {
            "kind": "Secret",
            "metadata": {"name": "git", "namespace": NS},
            "stringData": {"token": "t"},
        },
    )
    kube.edit("workflowlibraries", NS, "lib", lambda o: None, spec=True)
    job = run(kube, committer).job_name
    assert job
    volumes = kube.get("jobs", NS, job)["spec"]["template"]["spec"].get("volumes")  # type: ignore[index]
    assert "git" in json.dumps(volumes)


def test_a_refused_job_is_retried(kube: FakeKube, committer: Committer) -> None:
    kube.put("workflowlibraries", library())
    kube.fail["ensure"] = ApiException(status=403, reason="Forbidden")
    with pytest.raises(Retry, match="cannot create sync Job"):
        run(kube, committer)


def test_a_late_poll_does_not_undo_a_recorded_result(kube: FakeKube, committer: Committer) -> None:
    """The job event records the result and deletes the Job; a poll that read the library
    before that must not count the deleted Job as a failure."""
    kube.put("workflowlibraries", library())
    job = run(kube, committer).job_name
    finish(kube, job, message=json.dumps(RESULT))  # type: ignore[arg-type]
    stale = kube.get("workflowlibraries", NS, "lib")

    def job_event_first(plural: str, namespace: str, name: str) -> None:
        run(kube, committer)  # the event handler's commit lands (and deletes the Job)

    kube.before_status_write = job_event_first
    done = committer.commit(LIBRARY, stale, lambda obj: rec.reconcile(kube, CFG, obj))
    assert done is not None
    st = kube_status(kube)
    assert st.failures == 0 and conds(st)["Ready"] == ("True", "Succeeded")


# ---- delete ------------------------------------------------------------------------------


def test_delete_without_prune(kube: FakeKube) -> None:
    body = kube.put("workflowlibraries", library(prune=False))
    assert rec.delete(kube, CFG, body) == "prune is off: published workflows stay"


def test_delete_with_workspace_gone(kube: FakeKube) -> None:
    body = kube.put("workflowlibraries", library(workspace_ref="gone"))
    assert rec.delete(kube, CFG, body) == "workspace is gone: nothing to prune"


def test_delete_with_redis_reference_gone(kube: FakeKube) -> None:
    kube.put("workspaces", workspace("ref", redis={"urlSecretRef": {"name": "x", "key": "u"}}))
    body = kube.put("workflowlibraries", library(workspace_ref="ref"))
    assert rec.delete(kube, CFG, body).startswith("cannot prune: Secret 'x'")


class FakeStorage:
    instances: list[FakeStorage] = []

    def __init__(self, url: str, prefix: str, workspace_id: str) -> None:
        self.args = (url, prefix, workspace_id)
        self.closed = False
        FakeStorage.instances.append(self)

    async def close(self) -> None:
        self.closed = True


def test_delete_prunes_what_the_library_published(
    kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Result:
        removed = 4

    unpublished: list[tuple[Any, str]] = []

    async def unpublish(storage: Any, library_name: str) -> Result:
        unpublished.append((storage, library_name))
        return Result()

    monkeypatch.setattr(rec, "RedisStorage", FakeStorage)
    monkeypatch.setattr(rec, "unpublish_library", unpublish)
    kube.put("workspaces", workspace("pw", workspaceId="tenant", prefix="cm"))
    body = kube.put("workflowlibraries", library(workspace_ref="pw"))
    assert rec.delete(kube, CFG, body) == "pruned 4 workflow(s)"
    [(storage, name)] = unpublished
    assert name == "lib" and storage.args[1:] == ("cm", "tenant") and storage.closed
