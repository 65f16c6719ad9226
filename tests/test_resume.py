"""A kill -9 anywhere resumes to the same database as an uninterrupted run.

The processes are real `autointerp batch` / `export` runs. AUTOINTERP_KILL_AT makes a process SIGKILL itself right
after a chosen commit (store/killpoints.py), so every stage is interrupted at an exact place: cache chunks, the
compaction (which writes the statistics, filters and sketches), the vocabulary, the decoder directions, the cache's
completion mark, explanations, scores and an export. The external-kill tests in test_batch.py kill at whatever
moment the polling sees, as a user would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers.batch_config import write_config
from helpers.cli import batch_cmd, invoke_cli, run_cli
from helpers.databases import assert_same_database, copy_db, rows
from helpers.schema import to_schema_6_layout
from helpers.stores import fill_store

from autointerp.engine.activations.cache import cache_is_complete
from autointerp.engine.config import CacheConfig
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.filters import FilterSettings, filters_done
from autointerp.store.stats import compute_latent_stats, latent_stats

# One run, killed in turn at each place below, each resumed run going on from where the last died. The comment
# says what the resumed run finds committed when it starts.
KILLS = [
    ("cache.chunk:2", "select count(*) from chunks", 2),  # 2 of 4 chunks
    # Every chunk compacted (one band: one unit) with the band's statistics, filters and sketches (one pass).
    ("cache.compact:1", "select count(*) from latents", 3072),
    ("cache.vocab:1", "select count(*) from vocab", 49152),  # the vocabulary, no directions yet
    ("cache.directions:3", "select count(*) from directions", 1536),  # 3 of 6 batches of 512
    ("cache.mark:1", "select count(*) from directions", 3072),  # everything but the cache's completion mark
    ("explain:1", "select count(*) from explanations", 1),
    ("score:1", "select count(distinct latent) from scores", 1),
]


def run_killed_at(cfg, where: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, AUTOINTERP_KILL_AT=where)
    return subprocess.run(batch_cmd(cfg), capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_kill_9_after_any_commit_of_any_stage_resumes_to_the_uninterrupted_database(reference, tmp_path):
    db = tmp_path / "k.db"
    cfg = write_config(tmp_path / "c.toml", db)
    for where, count_sql, expected in KILLS:
        r = run_killed_at(cfg, where)
        assert r.returncode == -signal.SIGKILL, (where, r.returncode, r.stderr[-2000:])
        assert rows(db, count_sql)[0][0] == expected, where
        if where.startswith("cache.compact"):  # one pass: the band's statistics, filters and sketches came with it
            assert rows(db, "select count(*) from staged")[0][0] == 0
            assert rows(db, "select count(*) from coactivation_sketches")[0][0] == 1
            cfg_cache = CacheConfig(n_tokens=8192, chunk_tokens=2048, batch_size=8)
            with ActivationStore.open(db, readonly=True) as store:
                assert store.stats_done(32) and filters_done(store, FilterSettings.of(cfg_cache), "positional")
                assert not cache_is_complete(store, cfg_cache)  # the vocabulary and directions are still to come
    done = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_database(db, reference[0])
    statuses = [r[0] for r in rows(db, "select status from runs order by id")]
    assert statuses == ["running"] * len(KILLS) + ["done"]  # each killed run left a stale heartbeat, no end


def test_kill_9_inside_an_export_leaves_no_partial_output_and_the_rerun_writes_it_whole(reference, tmp_path):
    db = reference[0]
    whole = tmp_path / "whole"
    r = invoke_cli("export", str(db), "--format", "delphi", "--out", str(whole))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    env = dict(os.environ, AUTOINTERP_KILL_AT="export:2")
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "autointerp.engine.commands.cli",
            "export",
            str(db),
            "--format",
            "delphi",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists()  # the folder appears whole or not at all (its partial twin is hidden beside it)
    again = invoke_cli("export", str(db), "--format", "delphi", "--out", str(out))
    assert again.returncode == 0, again.stderr

    def tree(folder):
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    assert tree(out) == tree(whole) and len(tree(out)) > 4
    # Exporting again over it replaces it whole: same content, no leftovers beside it.
    assert invoke_cli("export", str(db), "--format", "delphi", "--out", str(out)).returncode == 0
    assert tree(out) == tree(whole)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["out", "whole"]


def test_statistics_resume_from_their_last_commit_and_are_redone_when_the_chunks_changed(tmp_path):
    store, _ = fill_store(tmp_path / "s.db", num_latents=2500)
    try:
        store.db.execute("pragma wal_checkpoint(truncate)")
        full = tmp_path / "full.db"
        shutil.copy(store.path, full)
        with ActivationStore.open(full) as ref:
            assert compute_latent_stats(ref, window_len=4) == 2500
            want = ref.db.execute("select * from latents order by latent").fetchall()
        # A pass that stopped after its first commit: 1,000 rows, marked in progress, not done.
        part = [latent_stats(store, i, 4, store.n_tokens()) for i in range(1000)]
        store.write_latent_stats(part, (store.stats_fingerprint(4), {"next_latent": 1000}, False))
        assert not store.stats_done(4)
        assert compute_latent_stats(store, window_len=4) == 1500  # only the rest
        assert store.stats_done(4) and not store.stats_done(8)  # other windows: other statistics
        assert store.db.execute("select * from latents order by latent").fetchall() == want
        assert compute_latent_stats(store, window_len=4) == 0  # done: nothing to do
        # One more chunk committed: the finished statistics no longer describe the file, and are redone whole.
        seqs = np.ones((2, 16), np.int64)
        store.write_chunk(
            ChunkInfo(2, 4, 2, 30, 1),
            seqs,
            np.array([7], np.int32),
            np.array([3], np.uint16),
            np.array([9.5], np.float16),
            0.0,
        )
        assert not store.stats_done(4)
        assert compute_latent_stats(store, window_len=4) == 2500
        assert store.latent_stats(7)["max_act"] == 9.5
    finally:
        store.close()


def test_an_old_database_killed_inside_its_statistics_is_recomputed_not_kept(real_cache_db, tmp_path):
    """The bug this file guards against: schema 5 took any `latents` row as a finished cache. A v5 file killed
    after 1,000 of 3,072 statistics rows must not become a cache with 1,000 latents for good."""
    import sqlite3

    db = copy_db(real_cache_db, tmp_path / "v5.db")
    want = rows(real_cache_db, "select * from latents order by latent")
    live = rows(real_cache_db, "select count(*) from latents where n_windows >= 20")[0][0]
    with sqlite3.connect(db) as c:  # what schema 5 left behind
        c.execute("drop table stages")
        c.execute("alter table scores drop column n_retry")
        to_schema_6_layout(c)
        c.execute("delete from latents where latent >= 1000")
        c.execute("update meta set value = '5' where key = 'schema_version'")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'db = "{db}"\nprofile = "cpu"\n[batch]\nstages = ["cache"]\n'
        "[cache]\nn_tokens = 8192\nchunk_tokens = 4096\nbatch_size = 8\n"
    )
    r = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cache already complete" not in r.stderr
    assert rows(db, "select * from latents order by latent") == want
    assert rows(db, "select count(*) from latents where n_windows >= 20")[0][0] == live
    assert rows(db, "select count(*) from chunks") == rows(real_cache_db, "select count(*) from chunks")


def test_a_corpus_that_ran_out_is_a_complete_cache_and_is_not_read_again(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(f"word{i % 97}" for i in range(600)))  # ~1,700 tokens, far less than asked
    db = tmp_path / "x.db"
    args = [
        "cache",
        "--db",
        str(db),
        "--corpus",
        str(corpus),
        "--n-tokens",
        "65536",
        "--seq-len",
        "128",
        "--batch-size",
        "8",
        "--no-check",  # "word17 word18 ..." is far from the text the embedded SAE was trained on (FVU 0.8)
    ]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "corpus ran out" in first.stderr
    with ActivationStore.open(db, readonly=True) as store:
        mark = store.stage("cache")
        assert mark["done_at"] and mark["detail"]["exhausted"] is True
        n_chunks, fingerprint = len(store.chunks()), store.chunk_fingerprint()
    corpus.unlink()  # complete: the batch needs the corpus no more, and does not read it again
    cfg = tmp_path / "b.toml"
    cfg.write_text(
        f'db = "{db}"\n[batch]\nstages = ["cache"]\n[cache]\ncorpus = "{corpus}"\nn_tokens = 65536\n'
        "seq_len = 128\nbatch_size = 8\n"
    )
    again = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    assert again.returncode == 0 and "cache already complete" in again.stderr, again.stderr[-2000:]
    with ActivationStore.open(db, readonly=True) as store:
        assert (len(store.chunks()), store.chunk_fingerprint()) == (n_chunks, fingerprint)
