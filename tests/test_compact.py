"""The staged -> segments layout: reads exact at every moment, compaction resumable to identical rows, and the
migration of a schema-6 database."""

import functools
import itertools
import sqlite3

import numpy as np
import pytest
from helpers.stores import base_provenance

from autointerp.store import compact as compact_mod
from autointerp.store.codec import legacy_encode
from autointerp.store.compact import compact
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.layout import BAND, SEGMENT
from autointerp.store.stats import compute_latent_stats

SEQ_LEN, PER_CHUNK, N_CHUNKS = 1024, 60, 3  # 61,440 tokens per chunk: uint16 offsets
DENSE = BAND + 7  # fires on every token: more than two segments' worth over three chunks
NUM_LATENTS = 3 * BAND + 11


def chunks_of(seed=0):
    """Three chunks: a dense latent plus rare ones in every band, (info, seqs, latents, offsets, values) each."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(N_CHUNKS):
        offsets = np.array([o for o in range(PER_CHUNK * SEQ_LEN) if o % SEQ_LEN], np.int64)
        lat = [np.full(len(offsets), DENSE)]
        off = [offsets]
        rare = rng.choice(offsets, 3000, replace=False)
        lat.append(rng.integers(0, NUM_LATENTS, len(rare)))
        off.append(rare)
        latents, offs = np.concatenate(lat), np.concatenate(off)
        keep = latents != DENSE
        keep[: len(offsets)] = True  # the dense latent once per token, rare ones never on it twice
        order = np.argsort(offs, kind="stable")
        latents, offs = latents[order].astype(np.int32), offs[order].astype(np.uint16)
        values = rng.exponential(2, len(latents)).astype(np.float16) + np.float16(0.01)
        seqs = rng.integers(2, 100, size=(PER_CHUNK, SEQ_LEN))
        info = ChunkInfo(c, c * PER_CHUNK, PER_CHUNK, PER_CHUNK * (SEQ_LEN - 1), len(values))
        out.append((info, seqs, latents, offs, values))
    return out


def truth(chunks) -> dict[int, list]:
    by = {}
    for info, _, latents, offs, values in chunks:
        for lat, o, v in zip(latents.tolist(), offs.tolist(), values.tolist()):
            by.setdefault(lat, []).append((info.first_seq * SEQ_LEN + o, v))
    return {lat: sorted(pairs) for lat, pairs in by.items()}


def make(path, chunks) -> ActivationStore:
    store = ActivationStore.open(path, create=True)
    store.claim(base_provenance(num_latents=NUM_LATENTS, seq_len=SEQ_LEN, chunk_seqs=PER_CHUNK))
    for ch in chunks:
        store.write_chunk(*ch, 0.0)
    return store


def check_reads(store, expected, latents):
    for lat in latents:
        pos, vals = store.latent_activations(lat)
        want = expected.get(lat, [])
        assert pos.tolist() == [p for p, _ in want], lat
        np.testing.assert_array_equal(vals, np.array([v for _, v in want], np.float32))


def table(store, sql):
    return store.db.execute(sql).fetchall()


class Killed(Exception):
    pass


def stop_at(stop_after: int, passes, name: str) -> None:
    """A kill point that stops compaction (as a kill -9 would, between two commits) at its stop_after-th pass."""
    if next(passes) == stop_after:
        raise Killed


SEGMENTS = "select latent, seg, n, max_act, first_pos, width, packed, data from segments order by latent, seg"


def test_compaction_interrupted_anywhere_resumes_to_the_same_rows(tmp_path, monkeypatch):
    chunks = chunks_of()
    expected = truth(chunks)
    sample = [DENSE, 0, 1, BAND - 1, BAND, 2 * BAND + 3, NUM_LATENTS - 1, *list(expected)[:20]]
    whole = make(tmp_path / "whole.db", chunks)
    assert whole.db.execute("select count(*) from staged").fetchone()[0] == N_CHUNKS * 4  # 4 bands x 3 chunks
    check_reads(whole, expected, sample)  # staged rows read exactly
    assert compact(whole) == sum(len(c[4]) for c in chunks)
    check_reads(whole, expected, sample)
    # One unit per band: a segment per latent, and the dense latent split every SEGMENT activations.
    dense = table(whole, f"select n from segments where latent = {DENSE} order by seg")
    assert [n for (n,) in dense] == [SEGMENT, SEGMENT, len(expected[DENSE]) - 2 * SEGMENT]
    n_segments = sum(-(-len(v) // SEGMENT) for v in expected.values())
    assert table(whole, "select count(*) from segments") == [(n_segments,)]
    whole.close()
    budget = 100_000  # 6 units: the dense band one per chunk, so its latents get a segment per chunk
    whole = make(tmp_path / "units.db", chunks)
    compact(whole, budget=budget)
    check_reads(whole, expected, sample)
    segs = table(whole, SEGMENTS)

    for stop_after in (1, 3, 5):
        part = make(tmp_path / f"part{stop_after}.db", chunks)

        monkeypatch.setattr(compact_mod, "kill_point", functools.partial(stop_at, stop_after, itertools.count(1)))
        with pytest.raises(Killed):
            compact(part, budget=budget)
        check_reads(part, expected, sample)  # half staged, half compacted: still every activation once
        monkeypatch.setattr(compact_mod, "kill_point", lambda name: None)
        compact(part, budget=budget)
        assert part.n_staged() == 0
        assert table(part, SEGMENTS) == segs
        part.close()
    whole.close()


def test_statistics_from_segments_equal_a_pass_over_all_values(tmp_path):
    chunks = chunks_of(1)
    expected = truth(chunks)
    store = make(tmp_path / "s.db", chunks)
    compute_latent_stats(store, window_len=32)  # compacts first
    assert store.n_staged() == 0
    n_tokens = store.n_tokens()
    for lat in [DENSE, *list(expected)[:30]]:
        row = store.latent_stats(lat)
        vals = np.array([v for _, v in expected[lat]], np.float32)
        windows = {p // SEQ_LEN * (SEQ_LEN // 32) + p % SEQ_LEN // 32 for p, _ in expected[lat]}
        assert row["count"] == len(vals) and row["frequency"] == len(vals) / n_tokens
        assert row["max_act"] == float(vals.max())
        assert row["mean_act"] == vals.astype(np.float64).sum() / len(vals)
        assert row["n_windows"] == len(windows)  # the dense latent's windows cross segment ends: none counted twice
    assert store.latent_stats(NUM_LATENTS - 2)["count"] == len(expected.get(NUM_LATENTS - 2, []))
    store.close()


def test_a_schema_6_database_migrates_to_segments_with_the_same_activations(tmp_path):
    import sqlite_utils

    from autointerp.store.schema import MIGRATIONS

    path = tmp_path / "v6.db"
    db = sqlite_utils.Database(path)
    for v in range(1, 7):
        MIGRATIONS[v](db)
    db.execute("insert into meta (key, value) values ('schema_version', '6')")
    prov = base_provenance(num_latents=8, seq_len=16, chunk_seqs=2)
    prov["versions"] = prov["config"] = "{}"
    db["provenance"].insert(dict(prov, id=1))
    rng = np.random.default_rng(0)
    expected: dict[int, list] = {}
    for c in range(3):
        db.execute("insert into chunks (id, first_seq, n_seqs, n_tokens, nnz) values (?, ?, 2, 30, 0)", [c, 2 * c])
        for lat in range(8):
            if rng.random() < 0.3:
                continue
            offs = np.sort(rng.choice(np.arange(1, 32), 5, replace=False)).astype(np.uint16)
            vals = rng.exponential(2, 5).astype(np.float16)
            db.execute("insert into activations values (?, ?, ?, ?)", [lat, c, *legacy_encode(offs, vals)])
            expected.setdefault(lat, []).extend(zip((offs.astype(int) + c * 32).tolist(), vals.tolist()))
    db.conn.commit()
    db.conn.close()
    with pytest.raises(Exception, match="upgrade"):  # a reader never migrates
        ActivationStore.open(path, readonly=True)
    with ActivationStore.open(path) as store:
        assert "activations" not in store.db.table_names()
        assert store.db.execute("select value from meta where key = 'codec'").fetchone()[0] == "zstd1-planes-v2"
        check_reads(store, {k: sorted(v) for k, v in expected.items()}, range(8))
        assert store.provenance["forward"] == "bridge"  # made before the plain forward: resumed through the bridge
        assert store.resume_point() is None  # no recorded corpus position: a resume reads the corpus from its start
    with sqlite3.connect(path) as c:
        assert c.execute("select count(*) from segments").fetchone()[0] == len(expected)
