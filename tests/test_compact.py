"""The staged -> segments layout: reads exact at every moment, compaction resumable to identical rows, and the
migration of a schema-6 database."""

import dataclasses
import functools
import itertools
import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from helpers.stores import base_provenance

from autointerp.engine.activations.neighbours import CoactivationIndex
from autointerp.store import compact as compact_mod
from autointerp.store import onepass
from autointerp.store.codec import legacy_encode
from autointerp.store.compact import compact, units
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.filters import FilterSettings, compute_filters, filters_done
from autointerp.store.layout import BAND, SEGMENT
from autointerp.store.onepass import compact_in_one_pass
from autointerp.store.queries import WindowQueries
from autointerp.store.sketches import EMPTY, SKETCH_BUCKETS, load_sketches, mix
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


# ---- one pass: statistics, filters and sketches computed by compaction ------------------------------------------

SMALL_LATENTS = 2 * BAND + 5  # three bands, the last one short
SMALL_SEQ, SMALL_PER_CHUNK, SMALL_CHUNKS = 256, 8, 4
HOT = BAND + 3  # fires on every token of the first half of each sequence: many units of its band, windows cut
SETTINGS = FilterSettings(unigram_min_activations=5, unigram_max_tokens=30, unigram_top_fraction=0.5)
TABLES = ("latents", "latent_filters", "columns")
BUDGET = 1200  # units of at most 1,200 activations: HOT's band in several units, each chunk one of them


def small_chunks(seed=0):
    """Four chunks of 8 x 256 tokens over three bands: HOT on the first half of every sequence, a few latents
    on one token id each (unigram candidates), and rare latents anywhere."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(SMALL_CHUNKS):
        seqs = rng.integers(2, 60, size=(SMALL_PER_CHUNK, SMALL_SEQ))
        flat = seqs.reshape(-1)
        offsets = np.arange(1, SMALL_PER_CHUNK * SMALL_SEQ)
        offsets = offsets[offsets % SMALL_SEQ != 0]
        lat = [np.full(int((offsets % SMALL_SEQ < SMALL_SEQ // 2).sum()), HOT)]
        off = [offsets[offsets % SMALL_SEQ < SMALL_SEQ // 2]]
        for token, latent in ((7, 5), (9, 2 * BAND + 1), (11, BAND + 9)):  # unigram-like latents
            at = offsets[flat[offsets] == token]
            lat.append(np.full(len(at), latent))
            off.append(at)
        rare = rng.choice(offsets, 300)
        lat.append(rng.integers(0, SMALL_LATENTS, len(rare)))
        off.append(rare)
        latents, offs = np.concatenate(lat), np.concatenate(off)
        pairs = np.unique(np.stack([offs, latents], 1), axis=0)  # one activation per (token, latent)
        offs, latents = pairs[:, 0], pairs[:, 1]
        values = rng.exponential(2, len(latents)).astype(np.float16) + np.float16(0.01)
        info = ChunkInfo(c, c * SMALL_PER_CHUNK, SMALL_PER_CHUNK, SMALL_PER_CHUNK * (SMALL_SEQ - 1), len(values))
        out.append((info, seqs, latents.astype(np.int32), offs.astype(np.uint16), values))
    return out


def make_small(path, chunks=None) -> ActivationStore:
    store = ActivationStore.open(path, create=True)
    store.claim(base_provenance(num_latents=SMALL_LATENTS, seq_len=SMALL_SEQ, chunk_seqs=SMALL_PER_CHUNK))
    for ch in chunks or small_chunks():
        store.write_chunk(*ch, 0.0)
    return store


def derived_rows(store) -> dict:
    """What the statistics and filters wrote: their tables, and their stage rows without the clock."""
    out = {t: table(store, f"select * from {t} order by 1") for t in TABLES}
    out["stages"] = table(store, "select name, fingerprint, detail, done_at is not null from stages order by name")
    return out


def old_sketches(store, window_len: int) -> np.ndarray:
    """The co-activation sketches as CoactivationIndex built them before they were stored: a pass over the segments,
    one latent's segment at a time."""
    q = WindowQueries(store, window_len)
    sig = np.full((SMALL_LATENTS, SKETCH_BUCKETS), EMPTY, np.uint32)
    for latent, positions, _ in store.scan_segments(0, SMALL_LATENTS):
        w = q.window_of(positions)
        h = mix(w[np.r_[True, w[1:] != w[:-1]]])
        low = np.minimum(h & np.uint64(0xFFFFFFFF), np.uint64(0xFFFFFFFE)).astype(np.uint32)
        np.minimum.at(sig[latent], (h >> np.uint64(58)).astype(np.intp), low)
    return sig


@pytest.fixture(scope="module")
def separate(tmp_path_factory):
    """The rows of today's separate passes (compaction, then statistics, then filters) over the small chunks."""
    store = make_small(tmp_path_factory.mktemp("sep") / "sep.db")
    compact(store, budget=BUDGET)
    compute_latent_stats(store, 32)
    compute_filters(store, SETTINGS)
    rows, segs, sig = derived_rows(store), table(store, SEGMENTS), old_sketches(store, 32)
    store.close()
    return rows, segs, sig


@pytest.mark.parametrize("hold", [None, 500])  # 500: the band's counts reduced every 500, the slices 700
def test_one_pass_writes_the_rows_of_the_separate_passes(tmp_path, separate, hold, monkeypatch):
    if hold is not None:
        monkeypatch.setattr(onepass, "HOLD", hold)
        monkeypatch.setattr(onepass, "SLICE", 700)  # units folded in over several slices (windows carried across)
    rows, segs, sig = separate
    store = make_small(tmp_path / "one.db")
    units_per_band = [
        len(units(table(store, f"select chunk, n from staged where band = {b} order by chunk"), BUDGET)) for b in (0, 1)
    ]
    assert units_per_band[1] > units_per_band[0] >= 1 and units_per_band[1] >= 4  # several units per band
    done = compact_in_one_pass(store, 32, SETTINGS, budget=BUDGET)
    assert (done.stats, done.filters, done.sketches) == (SMALL_LATENTS,) * 3
    assert table(store, SEGMENTS) == segs  # compaction itself unchanged
    assert derived_rows(store) == rows  # every statistics and filter row, the stages and the packed columns
    assert store.stats_done(32) and filters_done(store, SETTINGS, "positional")
    candidates = {r[0] for r in table(store, "select latent from latent_filters where unigram_candidate = 1")}
    assert {5, 2 * BAND + 1, BAND + 9} <= candidates  # the filters found something to agree on
    assert compute_latent_stats(store, 32) == 0 and compute_filters(store, SETTINGS) == 0  # nothing left to do
    np.testing.assert_array_equal(load_sketches(store, 32), sig)
    assert table(store, "select count(*) from coactivation_sketches") == [(3,)]
    store.close()


def test_stored_sketches_answer_coactivation_queries_as_the_rebuilt_ones(tmp_path, separate):
    _, _, sig = separate
    store = make_small(tmp_path / "one.db")
    compact_in_one_pass(store, 32, SETTINGS, budget=BUDGET)
    q = WindowQueries(store, 32)
    stored = CoactivationIndex(q, SMALL_LATENTS, k=5, candidates=50)
    rebuilt = CoactivationIndex(q, SMALL_LATENTS, k=5, candidates=50)
    rebuilt._sig = sig  # the sketches as every process rebuilt them before
    probes = [HOT, 5, BAND + 9, 2 * BAND + 1, *range(100, 140)]
    answers = [stored.similar(lat) for lat in probes]
    assert answers == [rebuilt.similar(lat) for lat in probes] and any(answers)
    with sqlite3.connect(store.path) as c:  # a file without them (compacted before schema 14): built once, stored
        c.execute("delete from coactivation_sketches where band = 1")
    with ActivationStore.open(store.path, readonly=True) as ro:  # a reader that may not write builds, keeps nothing
        np.testing.assert_array_equal(load_sketches(ro, 32), sig)
    assert table(store, "select band from coactivation_sketches order by band") == [(0,), (2,)]
    np.testing.assert_array_equal(load_sketches(store, 32), sig)
    assert table(store, "select band from coactivation_sketches order by band") == [(0,), (1,), (2,)]
    store.close()


ONE_PASS_SCRIPT = """
import sys
from autointerp.store.db import ActivationStore
from autointerp.store.filters import FilterSettings
from autointerp.store.onepass import compact_in_one_pass
with ActivationStore.open(sys.argv[1]) as store:
    compact_in_one_pass(store, 32, FilterSettings(**{settings}), budget={budget})
"""


@pytest.mark.slow
def test_kill_9_after_every_commit_of_the_one_pass_resumes_to_the_same_rows(tmp_path, separate):
    """A real process killed -9 right after each commit of the pass in turn (every unit of every band): each run
    resumes the last one's work, the last ends it, and the file holds what one uninterrupted pass writes."""
    rows, segs, sig = separate
    path = tmp_path / "k.db"
    with make_small(path) as store:
        n_units = sum(
            len(units(table(store, f"select chunk, n from staged where band = {b} order by chunk"), BUDGET))
            for b in range(3)
        )
    script = ONE_PASS_SCRIPT.format(settings=dataclasses.asdict(SETTINGS), budget=BUDGET)
    env = dict(os.environ, AUTOINTERP_KILL_AT="cache.compact:1")
    kills = 0
    while True:
        r = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True)
        if r.returncode == 0:
            break
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        kills += 1
        with ActivationStore.open(path, readonly=True) as store:  # a finished band has its rows, the next none
            stage = store.stage("cache.stats")
            done_to = stage["detail"]["next_latent"] if stage else 0
            assert table(store, "select count(*) from latents") == [(done_to,)]
            assert table(store, f"select count(*) from staged where band < {done_to // BAND}") == [(0,)]
    with ActivationStore.open(path) as store:
        assert kills == n_units >= 6  # killed after every unit of every band (HOT's band: one per chunk)
        assert table(store, SEGMENTS) == segs
        assert derived_rows(store) == rows
        np.testing.assert_array_equal(load_sketches(store, 32), sig)


def test_fine_histograms_of_many_latents_at_once_equal_numpys_one_by_one():
    """The statistics' fine histogram (store/stats.py: np.histogram over (0, max), max a Python float) computed for
    a block of latents at once by store/onepass.py: bin for bin, values on and next to the bin edges included."""
    rng = np.random.default_rng(3)
    lats, values, weights, tops = [], [], [], []
    for i in range(60):
        kind = i % 4
        v = (
            rng.exponential(2, 300)
            if kind == 0
            else rng.random(200) * rng.choice([1e-4, 1.0, 300.0, 6e4])
            if kind == 1
            else np.arange(1, 500) * rng.choice([0.01, 0.125, 0.37, 3.0])  # many values on edges
            if kind == 2
            else np.array([0.0, rng.random()])
        )
        v = np.unique(v.astype(np.float16)).astype(np.float32)
        v = v[np.isfinite(v)]
        lats.append(np.full(len(v), i)), values.append(v), weights.append(rng.integers(1, 5, len(v)))
        tops.append(float(v.max()) if v.max() > 0 else 1.0)
    got = onepass.fine_histograms(
        np.concatenate(lats), np.concatenate(values), np.concatenate(weights), np.array(tops), len(tops)
    )
    for i, top in enumerate(tops):
        want = np.histogram(values[i], bins=4000, range=(0.0, top), weights=weights[i])[0]
        np.testing.assert_array_equal(got[i], want)


def test_a_cache_extended_after_its_one_pass_gets_the_rows_of_the_separate_passes(tmp_path):
    """Two chunks compacted in one pass, then two more: the second pass starts each band from its compacted
    segments and ends with what the separate passes compute over the same segments."""
    chunks = small_chunks(2)
    one, sep = make_small(tmp_path / "one.db", chunks[:2]), make_small(tmp_path / "sep.db", chunks[:2])
    compact_in_one_pass(one, 32, SETTINGS, budget=BUDGET)
    compact(sep, budget=BUDGET)
    for store in (one, sep):
        for ch in chunks[2:]:
            store.write_chunk(*ch, 0.0)
    done = compact_in_one_pass(one, 32, SETTINGS, budget=BUDGET)
    assert (done.stats, done.filters, done.sketches) == (SMALL_LATENTS,) * 3  # the chunks changed: all again
    compact(sep, budget=BUDGET)
    compute_latent_stats(sep, 32)
    compute_filters(sep, SETTINGS)
    assert table(one, SEGMENTS) == table(sep, SEGMENTS)
    assert derived_rows(one) == derived_rows(sep)
    np.testing.assert_array_equal(load_sketches(one, 32), old_sketches(sep, 32))
    one.close(), sep.close()
