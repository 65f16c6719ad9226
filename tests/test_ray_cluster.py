"""`autointerp batch --ray`: the cache sharded over Ray workers and explain/score over LLM replicas give the same
database as one process, through a killed driver, a worker killed mid-chunk and a replica killed mid-scoring, on a
real local Ray cluster of 2 CPU workers started by the test; and the replica pool's backpressure and failover over
real HTTP servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers.batch_config import write_config
from helpers.cli import batch_cmd, invoke_cli
from helpers.databases import database_tables, rows, same_values
from helpers.fake_llm import FAST_RETRY, fake_server, reply, scripted
from helpers.servers import free_port

ray = pytest.importorskip("ray")

from autointerp.engine.config import ClusterConfig, ConfigError, LLMConfig, load_config  # noqa: E402
from autointerp.engine.interpretation.llm import LLMRequest  # noqa: E402
from autointerp.engine.interpretation.llm.replicas import make_replica_pool  # noqa: E402
from autointerp.engine.ray_cluster import Cluster  # noqa: E402


def test_cluster_settings_are_checked(tmp_path):
    for line, key in [
        ("replica_in_flight = 0", "cluster.replica_in_flight"),
        ("worker_gpus = 0", "cluster.worker_gpus"),
        ("cache_workers = -1", "cluster.cache_workers"),
        ("max_restarts = -2", "cluster.max_restarts"),
    ]:
        path = tmp_path / "c.toml"
        path.write_text(f"[cluster]\n{line}\n")
        with pytest.raises(ConfigError, match=key):
            load_config(path)


def test_an_unreachable_head_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    db = tmp_path / "r.db"
    cfg = write_config(tmp_path / "c.toml", db)
    for address, said in [
        (f"127.0.0.1:{free_port()}", "cannot reach the Ray cluster"),
        ("no-port-here", "is not HOST:PORT"),
    ]:
        r = invoke_cli("batch", cfg, "--ray", address)
        assert r.returncode != 0
        assert said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not db.exists()


def test_without_ray_installed_the_batch_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` then fails as if not installed
    db = tmp_path / "r.db"
    r = invoke_cli("batch", write_config(tmp_path / "c.toml", db), "--ray")
    assert r.returncode != 0 and "pip install 'autointerp[ray]'" in r.stderr and not db.exists()


def test_calls_lost_with_one_life_are_one_death_and_restarts_are_spent_before_a_worker_is_given_up():
    from types import SimpleNamespace

    from autointerp.engine.ray_cluster import count_loss

    w = SimpleNamespace(deaths=0, dead=False, rerun=0)
    assert count_loss(w, 0, max_restarts=1) == "restarting"  # its two calls in flight, lost together
    assert count_loss(w, 0, max_restarts=1) == "restarting"
    assert (w.deaths, w.rerun) == (1, 2)
    assert count_loss(w, 1, max_restarts=1) == "dead"  # a call sent to its restarted life, lost again
    assert (w.deaths, w.rerun, w.dead) == (2, 3, True)


# ---- the replica pool over real HTTP servers ---------------------------------------------------------------------


def pool_over(*urls, in_flight=2, board=None):
    cfg = LLMConfig(
        backend="openai",
        model="fake",
        base_urls=list(urls),
        max_retries=0,
        timeout_s=5.0,
        max_concurrency=in_flight,
        api_key_env="AUTOINTERP_TEST_NO_SUCH_KEY",
    )
    cluster = Cluster("none", cpus=1, gpus=0, nodes=1)  # URL replicas need no Ray
    return make_replica_pool(cluster, cfg, ClusterConfig(), board=board)


def ask(i: int) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": f"q{i}"}])


def run_calls(pool, n: int, per_call: int = 3):
    async def go():
        try:
            return await asyncio.gather(*(pool.complete_many([ask(i)] * per_call) for i in range(n)))
        finally:
            await pool.aclose()

    return asyncio.run(go())


def test_calls_spread_over_url_replicas_with_backpressure():
    slow = reply(sleep=0.05)
    with fake_server(scripted(slow)) as a, fake_server(scripted(slow)) as b:
        posts: list[tuple] = []
        pool = pool_over(a.url, b.url, in_flight=2, board=lambda *a, **k: posts.append((a, k)))
        assert pool.parallel_latents == 4
        answers = run_calls(pool, 24, per_call=1)
    assert all(r.ok for call in answers for r in call)
    assert len(a.seen) + len(b.seen) == 24 and len(a.seen) >= 4 and len(b.seen) >= 4
    # backpressure: never more than in_flight calls at one replica, the rest waited in the pool
    assert a.max_active <= 2 and b.max_active <= 2
    assert {p[0][0] for p in posts} == {a.url, b.url} and all(p[0][1] == "llm" for p in posts)


def test_an_unreachable_replica_is_set_aside_and_its_calls_resent_not_failed():
    down = reply(503, {"error": {"message": "overloaded"}}, FAST_RETRY)
    with fake_server(scripted(reply())) as good, fake_server(scripted(down)) as bad:
        posts: list[tuple] = []
        pool = pool_over(bad.url, good.url, board=lambda *a, **k: posts.append((a, k)))
        answers = run_calls(pool, 10)
    assert all(r.ok and r.text == "ok" for call in answers for r in call), "no call's outcome is the outage"
    assert len(good.seen) == 30  # every call answered by the live replica, the resent ones included
    assert pool.calls_rerun >= 1
    said = [k for (name, _), k in posts if name == bad.url and k.get("state") == "unreachable"]
    assert said and said[0]["rerun"] >= 1 and "overloaded" in said[0]["error"]


def test_with_every_replica_down_calls_come_back_unavailable_for_the_outage_logic():
    down = reply(503, {"error": {"message": "overloaded"}}, FAST_RETRY)
    with fake_server(scripted(down)) as a, fake_server(scripted(down)) as b:
        answers = run_calls(pool_over(a.url, b.url), 3)
    # transient: the stage pauses and re-sends (never stored as an outcome, see test_llm_outage)
    assert all(r.unavailable and not r.ok for call in answers for r in call)


# ---- a real local Ray cluster ------------------------------------------------------------------------------------


def comparable(db: Path) -> dict:
    """The database as test_resume compares it; a replica's llama.cpp threads (the CPUs Ray gave it) left out of
    the recorded settings."""
    tables = database_tables(db)
    for name in ("scores", "explanations"):
        for row in tables[name]:
            if isinstance(row.get("settings"), dict):
                row["settings"].pop("n_threads", None)
    return tables


def workers(db: Path) -> dict[tuple[int, str], dict]:
    cols = ["run", "worker", "role", "state", "done", "rerun", "error", "pid"]
    return {(r[0], r[1]): dict(zip(cols, r)) for r in rows(db, f"select {', '.join(cols)} from workers")}


@pytest.fixture(scope="module")
def ray_cluster():
    """A head and a second node of 1 CPU each: 2 CPU workers, as separate raylets (a worker can die alone)."""
    from ray.cluster_utils import Cluster as RayCluster

    c = RayCluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c.address
    finally:
        c.shutdown()


@pytest.mark.slow
def test_ray_batch_equals_one_process_through_killed_driver_worker_and_replica(tmp_path, reference, ray_cluster):
    ref_db = reference[0]
    db = tmp_path / "ray.db"
    extra = "[cluster]\nmax_restarts = 0\n"  # a killed worker stays dead: the survivor takes its work

    def run(stages, kill=None):
        env = {**os.environ, **({"AUTOINTERP_KILL_AT": kill} if kill else {})}
        cfg = write_config(tmp_path / "c.toml", db, extra=extra, stages=stages)
        return subprocess.run(batch_cmd(cfg, "--ray", ray_cluster), capture_output=True, text=True, env=env)

    # 1. The driver killed -9 right after its second chunk commit: the file keeps 2 chunks.
    r = run(("cache", "explain", "score"), kill="cache.chunk:2")
    assert r.returncode == -9, r.stderr[-2000:]
    assert rows(db, "select count(*) from chunks")[0][0] == 2

    # 2. Rerun: cache-0 dies on its first chunk (mid-chunk, before answering); the chunk goes to cache-1.
    r = run(("cache", "explain"), kill="cluster.encode.cache-0:1")
    assert r.returncode == 0, r.stderr[-3000:]
    w = workers(db)
    run_id = max(k[0] for k in w)
    assert w[(run_id, "cache-0")]["state"] == "dead" and w[(run_id, "cache-0")]["rerun"] >= 1
    assert w[(run_id, "cache-1")]["state"] == "done" and w[(run_id, "cache-1")]["done"] == 2  # chunks 2 and 3
    assert w[(run_id, "cache-0")]["error"]  # Ray's one line on why the actor is gone
    said = [m for (m,) in rows(db, f"select message from events where run = {run_id} and stage = 'cache'")]
    assert any("lost chunk 2" in m and "re-sent to cache-1" in m for m in said), said
    assert (
        "re-sent after their worker died: 1 chunks" in rows(db, f"select message from runs where id = {run_id}")[0][0]
    )

    # 3. Score: replica llm-0 dies holding its second latent's calls; they are re-sent to llm-1.
    r = run(("score",), kill="cluster.llm.llm-0:2")
    assert r.returncode == 0, r.stderr[-3000:]
    w = workers(db)
    run_id = max(k[0] for k in w)
    assert w[(run_id, "llm-0")]["state"] == "dead" and w[(run_id, "llm-0")]["rerun"] >= 1
    assert w[(run_id, "llm-1")]["done"] >= 1
    said = [m for (m,) in rows(db, f"select message from events where run = {run_id}")]
    assert any("llm replica llm-0 lost latent" in m for m in said), said
    assert "latent calls" in rows(db, f"select message from runs where id = {run_id}")[0][0]
    # nothing lost, nothing stored as a failure: the same database as one uninterrupted process
    assert rows(db, "select count(*) from scores where n_failed > 0") == [(0,)]
    a, b = comparable(db), comparable(ref_db)
    assert a.keys() == b.keys()
    for name in a:
        same_values(a[name], b[name], name)
    assert json.loads(rows(db, "select config from runs order by id desc limit 1")[0][0])["cluster"]["ray_address"]
