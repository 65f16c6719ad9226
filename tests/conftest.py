"""Shared fixtures. Stores are made by the real store code; models are the real embedded SmolLM2."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from autointerp.store.db import ActivationStore, ChunkInfo

# Test files that build minutes of shared fixtures (whole batches, LLM scoring), started first so that the two
# workers do not end on them one after the other (pytest-xdist hands out whole files in collection order).
HEAVY_FIRST = (
    "test_interpret_real.py",
    "test_batch.py",
    "test_scorers_real.py",
    "test_model_hooks.py",
    "test_generation_planted.py",
    "test_resume.py",
    "test_batch_faults.py",
)


def pytest_configure(config):
    """The suite runs offline: Hugging Face libraries read these when first imported, and a test that imports one
    before another test sets them would otherwise wait on network timeouts (20 s seen for one `datasets` call).

    Under pytest-xdist, give each worker its own share of the cores (worker i of n: every n-th core from i). Two
    workers that each ran torch and llama.cpp on every core would oversubscribe them: llama.cpp's spinning thread
    barriers and torch's OpenMP pool slow down many times over when their threads outnumber the cores. Batch and
    server processes a test starts inherit the share, and size their thread pools by it."""
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    worker = getattr(config, "workerinput", None)
    if worker is None or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    n, i = int(worker["workercount"]), int(worker["workerid"].removeprefix("gw"))
    mine = cores[i::n] or cores
    for tid in os.listdir("/proc/self/task"):  # every thread started so far (numpy's BLAS pool), not just this one
        try:
            os.sched_setaffinity(int(tid), mine)
        except OSError:
            pass  # a thread that just ended
    os.environ["OMP_NUM_THREADS"] = str(len(mine))  # torch, read when it is first imported (after this)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


@pytest.fixture(autouse=True)
def tui_settings_file(tmp_path_factory, monkeypatch) -> Path:
    """The TUI saves its settings on exit: every test gets its own file, never the real home's."""
    path = tmp_path_factory.mktemp("tui-config") / "tui.toml"
    monkeypatch.setenv("AUTOINTERP_TUI_CONFIG", str(path))
    return path


def base_provenance(**over) -> dict:
    prov = {
        "model": "test-model",
        "model_hash": "m0",
        "hook": "blocks.0.hook_resid_post",
        "coder_kind": "sparsify",
        "coder_path": "/x",
        "coder_hash": "c0",
        "num_latents": 8,
        "d_in": 4,
        "corpus": "test",
        "corpus_hash": "h0",
        "seq_len": 16,
        "n_tokens_target": 64,
        "chunk_seqs": 2,
        "token_dtype": "uint16",
        "vocab_size": 100,
        "bos_token_id": 1,
        "seed": 0,
        "versions": {},
        "config": {},
    }
    prov.update(over)
    return prov


def fill_store(path, n_chunks=2, seed=0, **prov_over) -> tuple[ActivationStore, dict]:
    """A store with random activations; returns it and the dense truth {(latent, global_pos): value}."""
    prov = base_provenance(**prov_over)
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    rng = np.random.default_rng(seed)
    seq_len, per_chunk, m = prov["seq_len"], prov["chunk_seqs"], prov["num_latents"]
    truth = {}
    for c in range(n_chunks):
        seqs = rng.integers(2, prov["vocab_size"], size=(per_chunk, seq_len))
        seqs[:, 0] = prov["bos_token_id"]
        lat, off, val = [], [], []
        for o in range(per_chunk * seq_len):
            if o % seq_len == 0:
                continue  # BOS: never an activation
            for latent in rng.choice(m, size=2, replace=False):
                v = np.float16(rng.uniform(0.1, 5.0))
                lat.append(latent), off.append(o), val.append(v)
                truth[(int(latent), c * per_chunk * seq_len + o)] = float(v)
        store.write_chunk(
            ChunkInfo(c, c * per_chunk, per_chunk, per_chunk * (seq_len - 1), len(val)),
            seqs,
            np.array(lat, np.int32),
            np.array(off, np.uint16),
            np.array(val, np.float16),
            0.0,
        )
    return store, truth


@pytest.fixture
def filled_store(tmp_path):
    store, truth = fill_store(tmp_path / "t.db")
    yield store, truth
    store.close()


@pytest.fixture(scope="session")
def subject_model():
    """The embedded SmolLM2 through TransformerLens (CPU, fp32), loaded once for every in-process test: each load
    costs ~10 s (weights, then booting the bridge). Tests leave it as they found it (steering removes its hooks)."""
    from autointerp.engine.activations.model import SubjectModel

    return SubjectModel.load("embedded", "cpu", "float32")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, request) -> Path:
    """A folder every pytest-xdist worker of this session sees: the workers' common parent (each worker has its
    own base folder under it), or the session's own base folder when the run is not distributed."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(request.config, "workerinput") else base


def build_once(shared_dir: Path, name: str, build) -> Path:
    """`build(folder)` run once per test session, whichever worker asks first; the others wait on a file lock and
    reuse the folder. A build that raised leaves no done mark, so the next worker to ask builds it again."""
    import shutil

    from filelock import FileLock

    folder = shared_dir / name
    with FileLock(str(shared_dir / f"{name}.lock")):
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".done").touch()
    return folder


@pytest.fixture(scope="session")
def real_cache_db(shared_dir, subject_model):
    """A real cache: the embedded SmolLM2 + shipped SAE over 8,192 tokens of the embedded corpus, built once per
    session. Tests copy the file (`copy_db`) before writing to it."""
    from autointerp.engine.activations.cache import run_cache
    from autointerp.engine.activations.setup import prepare
    from autointerp.engine.config import CacheConfig

    cfg = CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8)

    def build(folder):
        run_cache(cfg, str(folder / "cache.db"), parts=prepare(cfg, model=subject_model))

    return build_once(shared_dir, "realcache", build) / "cache.db"


def share_subject(interp, subject_model):
    """An Interpreter using the session's subject model instead of loading its own (its lazily loaded
    `subject` is a cached_property: setting it first is what the first use would have stored)."""
    interp.subject = subject_model
    return interp


def write_stand_in_explanation(results, latent: int, text: str) -> None:
    """An explanation written directly (no LLM call): for tests about scoring, not explaining."""
    results.write_explanation(
        {
            "latent": latent,
            "explainer": "default",
            "text": text,
            "n_calls": 0,
            "n_failed_calls": 0,
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "output_tokens": 0,
            "llm_seconds": 0.0,
        }
    )


# ---- explain / score against a scripted OpenAI-compatible server (test_llm_faults.fake_server) ----------------------

FAULT_SAMPLE_SIZES = dict(n_explain=6, activating_per_decile=1, n_non_activating=10, min_windows=20)


def llm_stage_config(db, urls, *, wait: float = 5.0, scorers=("detection",), **llm):
    """A config for explain/score over HTTP with few examples, one excerpt per prompt and no client retries."""
    from autointerp.engine.config import BatchConfig, Config, LLMConfig, SampleConfig, ScoreConfig

    kw = dict(
        backend="openai",
        model="fake",
        base_urls=list(urls),
        max_retries=0,
        timeout_s=5.0,
        max_concurrency=2,
        top_logprobs=0,
    )
    kw.update(llm)
    return Config(
        db=str(db),
        sample=SampleConfig(**FAULT_SAMPLE_SIZES),
        score=ScoreConfig(scorers=list(scorers), examples_per_prompt=1),
        llm=LLMConfig(**kw),
        batch=BatchConfig(outage_wait_s=wait),
    )


def run_llm_stage(cfg, stage: str, latents: list[int], redo: bool = False):
    """One explain or score stage in this process (real store, real HTTP backend); returns its StageTally."""
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.llm import make_backend

    store = ActivationStore.open(cfg.db)
    backend = make_backend(cfg.llm)
    interp = Interpreter(cfg, store, backend)

    async def go():
        try:
            return await interp.run_stage(stage, latents, redo)
        finally:
            await backend.aclose()

    try:
        return asyncio.run(go())
    finally:
        interp.close()
        store.close()


def auroc_by_ranks(labels: list[int], scores: list[float]) -> float:
    """AUROC as the share of (positive, negative) pairs that the scores order correctly, a tie counting half
    (Mann-Whitney): written out here, independent of the scikit-learn call the engine makes."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def assert_metrics_match_outcomes(r: dict) -> None:
    """A stored score row's counts and metrics equal what its own stored outcomes give: failures are counted,
    never scored as wrong answers, and every number in the row can be traced back to an example."""
    from collections import Counter

    out = r["outcomes"]
    failed = [o for o in out if o["failed"]]
    answered = [o for o in out if not o["failed"] and o["prediction"] is not None]
    assert (r["n"], r["n_failed"], r["n_scored"]) == (len(out), len(failed), len(answered)), r["scorer"]
    assert sum(r["errors"].values()) == r["n_failed"], (r["scorer"], r["errors"])
    cm = Counter((o["label"], o["prediction"]) for o in answered)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (cm[1, 1], cm[0, 1], cm[0, 0], cm[1, 0]), r["scorer"]
    assert r["accuracy"] == (pytest.approx((cm[1, 1] + cm[0, 0]) / len(answered)) if answered else None)
    ranked = [o for o in out if not o["failed"] and o["probability"] is not None and math.isfinite(o["probability"])]
    if {o["label"] for o in ranked} == {0, 1}:
        want = auroc_by_ranks([o["label"] for o in ranked], [o["probability"] for o in ranked])
        assert r["auroc"] == pytest.approx(want, abs=1e-9), r["scorer"]
    else:
        assert r["auroc"] is None, r["scorer"]


PROVENANCE_V11 = ("model_type", "forward_reason", "forward_sites", "start_rule", "forward_stale")


def to_schema_10(conn) -> None:
    """Undo schema 11's additions (how the forward was chosen per model family), as a schema-10 file had them."""
    for col in PROVENANCE_V11:
        conn.execute(f"alter table provenance drop column {col}")
    conn.execute("update meta set value = '10' where key = 'schema_version'")


def to_schema_9(conn) -> None:
    """Undo schema 11's and 10's additions (the workers of a scaled-out run), as a schema-9 file had them."""
    to_schema_10(conn)
    conn.execute("drop table workers")
    conn.execute("update meta set value = '9' where key = 'schema_version'")


def to_schema_8(conn) -> None:
    """Undo schema 10's and 9's additions (raters, explanation candidates, similarity), as a schema-8 file had them."""
    to_schema_9(conn)
    if conn.execute("select 1 from sqlite_master where name = 'audits'").fetchone():  # not a file taken to v3
        conn.execute(
            "create table audits_v8 (latent integer, explainer text, rating text, explanation text, note text,"
            " flagged integer, explanation_seen text, created_at text, updated_at text,"
            " primary key (latent, explainer))"
        )
        conn.execute(
            "insert or replace into audits_v8 select latent, explainer, rating, explanation, note, flagged,"
            " explanation_seen, created_at, updated_at from audits order by rater"
        )
        conn.execute("drop table audits")
        conn.execute("alter table audits_v8 rename to audits")
    for table in ("explanation_candidates", "similarity", "similarity_runs"):
        conn.execute(f"drop table {table}")
    conn.execute("update meta set value = '8' where key = 'schema_version'")


def to_schema_7(conn) -> None:
    """Undo schema 10's, 9's and 8's additions (the corpus resume point, the forward, the latent filters), as a
    schema-7 file had them."""
    to_schema_8(conn)
    conn.execute("alter table chunks drop column next_doc")
    conn.execute("alter table chunks drop column carry")
    conn.execute("alter table provenance drop column forward")
    conn.execute("drop table columns")
    conn.execute("delete from meta where key = 'scores_written'")
    conn.execute("drop table latent_filters")
    if conn.execute("select 1 from sqlite_master where name = 'stages'").fetchone():  # a file taken further back
        conn.execute("delete from stages where name in ('cache.filters', 'cache.unigram')")
    conn.execute("update meta set value = '7' where key = 'schema_version'")


def to_schema_6_layout(conn) -> None:
    """Rewrite a current database's activations as schema 6 and older stored them (one legacy-codec row per
    (latent, chunk)), so a test can make a faithful older file for the migration to bring forward."""
    from autointerp.store.codec import LEGACY_CODEC, decode_segment, legacy_encode

    to_schema_7(conn)
    seq_len = conn.execute("select seq_len from provenance").fetchone()[0]
    chunks = conn.execute("select id, first_seq from chunks order by id").fetchall()
    starts = np.array([first * seq_len for _, first in chunks], np.int64)
    conn.execute(
        "create table activations (latent integer not null, chunk integer not null, offsets blob not null,"
        " acts blob not null)"
    )
    conn.execute("create unique index idx_activations_latent_chunk on activations (latent, chunk)")
    for (latent,) in conn.execute("select distinct latent from segments").fetchall():
        parts = [
            decode_segment(*r)
            for r in conn.execute(
                "select first_pos, width, packed, n, data from segments where latent = ? order by seg", [latent]
            )
        ]
        pos, val = np.concatenate([p for p, _ in parts]), np.concatenate([v for _, v in parts])
        which = np.searchsorted(starts, pos, side="right") - 1
        for i in np.unique(which):
            mine = which == i
            conn.execute(
                "insert into activations values (?, ?, ?, ?)",
                [latent, chunks[i][0], *legacy_encode(pos[mine] - starts[i], val[mine])],
            )
    conn.execute("drop table segments")
    conn.execute("drop table staged")
    conn.execute("update meta set value = ? where key = 'codec'", [LEGACY_CODEC])


def copy_db(src, dst):
    import shutil

    shutil.copy(src, dst)
    return dst


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    """The real `autointerp` command line in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "autointerp.engine.commands.cli", *args], capture_output=True, text=True, **kw
    )


def invoke_cli(*args) -> subprocess.CompletedProcess:
    """The `autointerp` command line run in this process through click's CliRunner: the same command, arguments,
    stdout, stderr and exit status as `run_cli`, without a fresh interpreter's seconds of imports (torch...). For
    tests about what a command does (report, info, export); kills, crashes and start-up need `run_cli`."""
    from click.testing import CliRunner

    from autointerp.engine.commands.cli import main

    r = CliRunner().invoke(main, [str(a) for a in args])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # a command that raised: its traceback, not a bare exit status 1
    return subprocess.CompletedProcess(list(args), r.exit_code, r.stdout, r.stderr)


def complete_and_close(backend, requests):
    """One `complete_many` on a fresh event loop, closing the backend after."""

    async def go():
        try:
            return await backend.complete_many(requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(port: int, log_path, timeout: float = 60.0) -> subprocess.Popen:
    """A real llama.cpp OpenAI-compatible server (llama_cpp.server, through autointerp.engine.interpretation.llm.serve for its AMX
    guard) with the embedded SmolLM2 on 127.0.0.1,
    returned once it answers. One thread for generation and for prompts (whose default is every core): on
    a 2-core machine shared with other work, llama.cpp's spinning thread barriers turned 0.3 s calls into 45 s."""
    import time
    import urllib.request

    from autointerp.engine.defaults import smollm2_gguf

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autointerp.engine.interpretation.llm.serve",
                "--model",
                str(smollm2_gguf()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--n_ctx",
                "4096",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{open(log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"llama_cpp.server did not answer in {timeout:.0f} s:\n{open(log_path).read()[-2000:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---- the batch on a small slice of the embedded default, shared by the batch, resume and fault tests ----------

# 8,192 tokens in 4 chunks, the 2 most frequent latents, few examples.
SMALL = """
db = "{db}"
profile = "cpu"
[batch]
latents = "{latents}"
progress_interval_s = 0.2
stages = {stages}
[cache]
n_tokens = 8192
chunk_tokens = {chunk_tokens}
batch_size = 8
[sample]
activating_per_decile = 1
n_non_activating = 4
[score]
scorers = ["detection", "embedding"]
examples_per_prompt = 5
"""


def write_config(
    path: Path, db: Path, latents="top:2", extra="", chunk_tokens=2048, stages=("cache", "explain", "score")
) -> Path:
    path.write_text(
        SMALL.format(db=db, latents=latents, chunk_tokens=chunk_tokens, stages=json.dumps(list(stages))) + extra
    )
    return path


def batch_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "autointerp.engine.commands.cli", "batch", *map(str, args)]


def rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def results(db: Path) -> dict:
    """Everything a run computes, without times, cache-hit counts or timestamps (which differ run to run)."""
    scores = []
    for r in rows(
        db,
        "select latent, explainer, scorer, control, explanation_latent, explanation, n, n_scored,"
        " n_failed, tp, fp, tn, fn, auroc, outcomes, n_calls, prompt_tokens, output_tokens, seed"
        " from scores order by latent, scorer, control",
    ):
        outcomes = [(o["window"], o["label"], o["prediction"], o["failed"]) for o in json.loads(r[14])]
        scores.append((*r[:13], None if r[13] is None else round(r[13], 3), outcomes, *r[15:]))
    return {
        "chunks": rows(db, "select id, first_seq, n_seqs, n_tokens, nnz from chunks order by id"),
        "activations": rows(db, "select latent, seg, n, first_pos, width, packed, data from segments order by 1, 2"),
        "staged": rows(db, "select band, chunk, n, data from staged order by band, chunk"),
        "latents": rows(db, "select latent, count, max_act, n_windows, deciles from latents order by latent"),
        "sample_sets": rows(db, "select latent, seed, n_windows, config, skipped from sample_sets order by latent"),
        "samples": rows(db, "select latent, window, role, decile, source, idx from samples order by latent, window"),
        "explanations": rows(
            db,
            "select latent, explainer, text, error, raw, n_examples, seed, prompt_sha, n_calls,"
            " prompt_tokens, output_tokens from explanations order by latent",
        ),
        "scores": scores,
    }


@pytest.fixture(scope="session")
def reference(shared_dir):
    """One uninterrupted batch of the small slice, and the dry-run plan made before it (once per session: the
    tests that compare a resumed or faulted run against it share this one run). -> (db, plan, the run)"""

    def build(d):
        cfg = write_config(d / "c.toml", d / "ref.db")
        plan = invoke_cli("batch", cfg, "--dry-run", "--json")  # in this process: the plan reads, never writes
        assert plan.returncode == 0, plan.stderr
        run = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
        (d / "plan.json").write_text(plan.stdout)
        (d / "run.stderr").write_text(run.stderr)

    d = build_once(shared_dir, "ref", build)
    run = subprocess.CompletedProcess(batch_cmd(d / "c.toml"), 0, "", (d / "run.stderr").read_text())
    return d / "ref.db", json.loads((d / "plan.json").read_text()), run


# ---- comparing whole databases ---------------------------------------------------------------------------------

# What differs between two runs that computed the same thing: when, how long, how much the prefix cache served.
VOLATILE_COLUMNS = {"created_at", "updated_at", "done_at", "committed_at", "seconds", "llm_seconds", "cached_tokens"}
# Run bookkeeping (one row per process, so a resumed run has more), and the full-text index's own tables (rowids
# follow insertion order, which two concurrent latents may swap).
SKIPPED_TABLES = {"runs", "progress", "events", "columns", "workers"}
# `columns` holds packed copies of other tables' columns (store/columns.py), versioned by the `scores_written`
# counter, which counts write transactions (a resumed run may make more): both are checked against the rows they
# copy where they are made (test_batch, test_browse_order), not compared here.
SKIPPED_META_KEYS = {"scores_written"}
JSON_COLUMNS = {
    "outcomes",
    "errors",
    "settings",
    "details",
    "recall_per_decile",
    "extras",
    "config",
    "detail",
    "deciles",
    "hist_edges",
    "hist_counts",
    "promoted",
    "suppressed",
    "neighbours",
    "versions",
}


def database_tables(db: Path) -> dict[str, list[dict]]:
    """Every table's rows (by primary key order), volatile columns left out, JSON columns parsed."""
    out = {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        names = [r[0] for r in c.execute("select name from sqlite_master where type = 'table' order by name")]
        for name in names:
            if name in SKIPPED_TABLES or name.startswith("explanations_fts"):
                continue
            cols = [r[1] for r in c.execute(f"pragma table_info('{name}')")]
            keep = [col for col in cols if col not in VOLATILE_COLUMNS]
            order = [r[1] for r in sorted(c.execute(f"pragma table_info('{name}')"), key=lambda r: r[5]) if r[5]]
            sql = f"select {', '.join(keep)} from {name}" + (f" order by {', '.join(order)}" if order else "")
            table = []
            for row in c.execute(sql):
                rec = dict(zip(keep, row))
                if name == "meta" and rec.get("key") in SKIPPED_META_KEYS:
                    continue
                for col in JSON_COLUMNS & rec.keys():
                    if isinstance(rec[col], str):
                        rec[col] = json.loads(rec[col])
                table.append(rec)
            if not order:
                table.sort(key=repr)
            out[name] = table
    return out


def _same(a, b, where: str) -> None:
    """Equal, floats within 1e-3 (logprob-derived values move in the last digits when llama.cpp's prefix cache
    splits a prompt differently)."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-3), (where, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (where, sorted(a), sorted(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_database(got: Path, want: Path) -> None:
    """Two databases hold the same results, table by table and row by row (see VOLATILE_COLUMNS)."""
    a, b = database_tables(got), database_tables(want)
    assert a.keys() == b.keys()
    for name in a:
        _same(a[name], b[name], name)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that everything in this process reads, offline (huggingface_hub's module
    constants are read at import, so they are set beside the environment). Layouts: tests/hub_layout.py."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def requested(monkeypatch) -> list[str]:
    """The repo files asked of huggingface_hub, in order (a spy: every call goes through)."""
    import huggingface_hub

    asked: list[str] = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kw):
        asked.append(filename)
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return asked
