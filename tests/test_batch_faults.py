"""`autointerp batch` under faults: bad config, missing model or coder, a backend that goes away, two
processes and a reader on one database, a full disk. Real parts throughout: a real cache, the real
llama.cpp server (stopped and restarted by the test), real SQLite files and a real file-size limit."""

from __future__ import annotations

import json
import resource
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.cli import batch_cmd
from helpers.databases import copy_db, results, rows
from helpers.servers import free_port, start_llama_server, stop_process
from helpers.stand_in_llm import stand_in_gguf, with_stand_in

from autointerp.engine.commands.cli import main
from autointerp.store.db import ActivationStore

# The real_cache_db fixture's cache settings, so the batch finds the cache complete and skips that stage.
CACHED = """
db = "{db}"
profile = "cpu"
[batch]
latents = {latents}
stages = ["explain", "score"]
progress_interval_s = 0.2
outage_wait_s = {wait}
[cache]
n_tokens = 8192
chunk_tokens = 4096
batch_size = 8
[sample]
activating_per_decile = 1
n_non_activating = 4
[score]
scorers = ["detection"]
examples_per_prompt = 5
"""


def cached_config(tmp_path: Path, db: Path, latents, wait=600.0, extra="", name="c.toml") -> Path:
    path = tmp_path / name
    path.write_text(CACHED.format(db=db, latents=json.dumps(latents), wait=wait) + with_stand_in(extra))
    return path


def top_latents(db: Path, n: int) -> list[int]:
    return [r[0] for r in rows(db, f"select latent from latents where n_windows >= 20 order by count desc limit {n}")]


def one_error_line(r) -> str:
    errors = [line for line in r.output.splitlines() if line.startswith("error")]
    assert r.exit_code == 2 and len(errors) == 1 and "Traceback" not in r.output, r.output
    assert r.output.rstrip().endswith(errors[0])  # the last thing said
    return errors[0]


def test_config_errors_name_the_key_and_touch_nothing(tmp_path):
    db = tmp_path / "never.db"
    cases = {
        "[batch]\nlatent = 'top:2'\n": "unknown config key 'batch.latent'",
        "[batch]\nlatents = 3\n": "config key 'batch.latents': 3 has the wrong type",
        "[batch]\nstages = ['cache', 'cook']\n": "config key 'batch.stages': 'cook' is not one of cache, explain, score",
        "[batch]\noutage_wait_s = 'soon'\n": "config key 'batch.outage_wait_s': expected float",
        "[batch\n": "is not valid TOML",
        "[cache]\nmodel = '/no/such/model'\n": "/no/such/model",
        "[cache]\ncoder = '/no/such/sae'\n": "coder checkpoint /no/such/sae does not exist",
    }
    runner = CliRunner()
    for i, (text, expected) in enumerate(cases.items()):
        cfg = tmp_path / f"bad{i}.toml"
        cfg.write_text(f'db = "{db}"\n' + text)
        line = one_error_line(runner.invoke(main, ["batch", str(cfg)]))
        assert expected in line, (text, line)
    assert one_error_line(runner.invoke(main, ["batch", str(tmp_path / "none.toml")])).endswith("does not exist")
    assert not db.exists()  # nothing was created for a run that could not start


def test_init_writes_every_key_with_its_default(tmp_path):
    import dataclasses

    from autointerp.engine.config import Config, load_config

    path = tmp_path / "autointerp.toml"
    runner = CliRunner()
    r = runner.invoke(main, ["init", str(path)])
    assert r.exit_code == 0, r.output
    assert load_config(path) == Config()  # the written values are the defaults
    text = path.read_text()
    for section in ("", "batch", "cache", "llm", "sample", "explain", "score", "cluster"):
        part = getattr(Config(), section) if section else Config()
        body = text.split(f"[{section}]\n")[1].split("\n[")[0] if section else text.split("\n[")[0]
        for f in dataclasses.fields(part):
            if not dataclasses.is_dataclass(f.type) and f.name not in (
                "cache",
                "llm",
                "sample",
                "explain",
                "score",
                "batch",
                "cluster",
            ):
                assert f"{f.name} = " in body, f"{section}.{f.name} is not documented in the init file"
    assert one_error_line(runner.invoke(main, ["init", str(path)])).endswith(
        "already exists (use --force to overwrite)"
    )


@pytest.mark.slow
def test_two_batches_on_disjoint_latents_share_one_database_while_a_reader_polls(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "shared.db")
    a, b = top_latents(db, 4)[:2], top_latents(db, 4)[2:]
    # One llama.cpp thread each: two processes spinning two threads each on two cores slow every call many times over.
    one_thread = "[llm]\nn_threads = 1\n"
    procs = [
        subprocess.Popen(
            batch_cmd(cached_config(tmp_path, db, part, extra=one_thread, name=f"{i}.toml")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, part in enumerate((a, b))
    ]
    reader_errors, reads, stop = [], [0], threading.Event()

    def read_like_the_tui():  # a monitor in another connection, read-only, polling what the batches write
        while not stop.is_set():
            try:
                with ActivationStore.open(db, readonly=True) as store:
                    store.results.scores()
                    store.db.execute("select * from progress").fetchall()
                    store.events(20)
                reads[0] += 1
            except Exception as e:  # noqa: BLE001 - any failure is what this test looks for
                reader_errors.append(repr(e))
            time.sleep(0.02)

    reader = threading.Thread(target=read_like_the_tui)
    reader.start()
    try:
        outs = [p.communicate(timeout=600)[1] for p in procs]
    finally:
        stop.set()
        reader.join()
    assert [p.returncode for p in procs] == [0, 0], [o[-2000:] for o in outs]
    assert not any("locked" in o for o in outs)
    assert reader_errors == [] and reads[0] > 10
    assert sorted(r[0] for r in rows(db, "select latent from explanations")) == sorted(a + b)
    scored = rows(db, "select latent, control, explanation_latent from scores")
    assert len(scored) == 8
    for latent, control, who in scored:  # each process drew controls from its own range: reproducible
        assert (who == latent) == (control == 0) and (who in a) == (latent in a)
    assert [r[0] for r in rows(db, "select status from runs")] == ["done", "done"]


@pytest.mark.slow
def test_backend_outage_mid_run_pauses_and_resumes_with_nothing_lost(tmp_path, real_cache_db):
    pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")
    db = copy_db(real_cache_db, tmp_path / "outage.db")
    port = free_port()
    llm = (
        f'[llm]\nbackend = "openai"\nmodel = "smollm2"\nbase_urls = ["http://127.0.0.1:{port}/v1"]\n'
        'structured_output = "json_object"\nmax_retries = 1\ntimeout_s = 60\nmax_concurrency = 2\ntop_logprobs = 5\n'
    )
    cfg = cached_config(tmp_path, db, top_latents(db, 2), wait=120, extra=llm)
    server = start_llama_server(port, tmp_path / "server.log", model=stand_in_gguf())
    proc = subprocess.Popen(batch_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not rows_or_none(db, "select count(*) from explanations where text is not null or error is not null"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
            time.sleep(0.05)
        stop_process(server)  # the backend goes away mid-run ...
        time.sleep(3)
        server = start_llama_server(
            port, tmp_path / "server.log", model=stand_in_gguf()
        )  # ... and comes back on the same address
        _, err = proc.communicate(timeout=600)
    finally:
        stop_process(server)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    kinds = [r[0] for r in rows(db, "select kind from events where run is not null")]
    assert "outage" in kinds and "resumed" in kinds, kinds
    # No failure from the outage was stored: every row is an answer of the server, or a failure of its answer.
    stored = rows(db, "select error from explanations") + rows(db, "select errors from scores")
    assert len(rows(db, "select * from explanations")) == 2 and len(rows(db, "select * from scores")) == 4
    assert not any("Connection" in (e or "") or "InternalServer" in (e or "") for (e,) in stored), stored


def rows_or_none(db, sql):
    try:
        return rows(db, sql)[0][0]
    except sqlite3.Error:
        return None


def test_a_backend_that_never_comes_back_stops_cleanly_and_stores_no_failures(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "gone.db")
    llm = (
        f'[llm]\nbackend = "openai"\nmodel = "x"\nbase_urls = ["http://127.0.0.1:{free_port()}/v1"]\n'
        "max_retries = 0\ntimeout_s = 2\n"
    )
    cfg = cached_config(tmp_path, db, top_latents(db, 2), wait=2, extra=llm)
    before = results(db)
    t0 = time.monotonic()
    r = subprocess.run(batch_cmd(cfg), capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "stopped: the LLM backend was unavailable" in r.stderr and "rerun the same command to resume" in r.stderr
    assert time.monotonic() - t0 < 120  # it stopped instead of retrying forever
    after = results(db)
    for table in ("chunks", "activations", "latents", "explanations", "scores"):
        assert after[table] == before[table], table  # no failure stored for calls that never reached a model
    assert after["explanations"] == [] and len(after["sample_sets"]) <= 2  # examples drawn (seeded) may stay
    ((status, message),) = rows(db, "select status, message from runs")
    assert status == "stopped" and "unavailable" in message


@pytest.mark.slow
def test_a_full_disk_stops_cleanly_and_the_rerun_completes(tmp_path, real_cache_db):
    db = copy_db(real_cache_db, tmp_path / "full.db")
    one_thread = "[llm]\nn_threads = 1\n"  # the reference and the full-disk run go side by side, one core each
    cfg = cached_config(tmp_path, db, top_latents(db, 2), extra=one_thread)
    ref_db = copy_db(real_cache_db, tmp_path / "ref.db")
    ref_cfg = cached_config(tmp_path, ref_db, top_latents(db, 2), extra=one_thread, name="ref.toml")
    ref = subprocess.Popen(batch_cmd(ref_cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    limit = 96 * 1024  # no file may grow past this: the write-ahead log hits it after the first latent

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = subprocess.run(batch_cmd(cfg), capture_output=True, text=True, preexec_fn=small_disk)
    ref_err = ref.communicate(timeout=600)[1]
    assert ref.returncode == 0, ref_err[-2000:]
    assert r.returncode == 3, r.stderr[-2000:]
    assert f"cannot write {db}" in r.stderr and "rerun the same command to resume" in r.stderr
    assert "Traceback" not in r.stderr
    done_before = rows(db, "select latent, text from explanations")
    again = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(done_before) <= set(rows(db, "select latent, text from explanations"))
    got, want = results(db), results(ref_db)
    for table in ("sample_sets", "samples", "explanations", "scores"):
        assert got[table] == want[table], table
    shutil.rmtree(tmp_path, ignore_errors=True)
