import sqlite3

import numpy as np
import pytest
from helpers.stores import base_provenance, fill_store

from autointerp.store.db import ActivationStore, ChunkInfo, StoreError
from autointerp.store.queries import WindowQueries
from autointerp.store.schema import SCHEMA_VERSION
from autointerp.store.stats import compute_latent_stats


def test_roundtrip_latent_major(filled_store):
    store, truth = filled_store
    for latent in range(8):
        pos, vals = store.latent_activations(latent)
        expected = sorted((p, v) for (lat, p), v in truth.items() if lat == latent)
        assert pos.tolist() == [p for p, _ in expected]
        np.testing.assert_allclose(vals, [v for _, v in expected], rtol=1e-3)
    # Packed arrays, never one row per activation: one staged row per (band, chunk) while caching ...
    assert store.db.execute("select count(*) from staged").fetchone()[0] == 2
    assert store.nnz() == len(truth)
    # ... and one segment per latent once compacted, with the same activations read back.
    from autointerp.store.compact import compact

    assert compact(store) == len(truth)
    assert store.n_staged() == 0
    assert store.db.execute("select count(*) from segments").fetchone()[0] == 8
    for latent in range(8):
        pos, _ = store.latent_activations(latent)
        assert pos.tolist() == sorted(p for (lat, p) in truth if lat == latent)


def test_wal_and_schema_version(filled_store):
    store, _ = filled_store
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    v = store.db.execute("select value from meta where key='schema_version'").fetchone()[0]
    assert int(v) == SCHEMA_VERSION


def test_sequences_packed_uint16(filled_store):
    store, _ = filled_store
    blob = store.db.execute("select tokens from sequences where id = 0").fetchone()[0]
    assert len(blob) == 16 * 2
    seqs = store.sequences([0, 3])
    assert set(seqs) == {0, 3} and seqs[3][0] == 1


@pytest.mark.parametrize(
    "key, value, message",
    [("schema_version", str(SCHEMA_VERSION + 1), "newer"), ("codec", "raw-v0", "codec 'raw-v0'")],
)
def test_other_version_or_codec_refused_and_untouched(tmp_path, key, value, message):
    path = tmp_path / "other.db"
    store, _ = fill_store(path)
    store.db.execute("update meta set value = ? where key = ?", [value, key])
    store.db.conn.commit()
    store.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=message):
        ActivationStore.open(path)
    assert path.read_bytes() == before


def test_foreign_sqlite_and_garbage_refused(tmp_path):
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("create table t (x)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not an autointerp database"):
        ActivationStore.open(foreign)
    assert foreign.read_bytes() == before
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not an SQLite database"):
        ActivationStore.open(junk)
    with pytest.raises(StoreError, match="does not exist"):
        ActivationStore.open(tmp_path / "missing.db")


def test_identity_mismatch_names_field(filled_store):
    store, _ = filled_store
    store.claim(base_provenance())  # same identity: accepted
    with pytest.raises(StoreError, match="coder_hash"):
        store.claim(base_provenance(coder_hash="other"))
    with pytest.raises(StoreError, match="corpus_hash"):
        store.claim(base_provenance(corpus_hash="other"))


def test_latent_stats(filled_store):
    store, truth = filled_store
    compute_latent_stats(store, window_len=4)
    for latent in (0, 5):
        vals = np.array([v for (lat, _), v in truth.items() if lat == latent], np.float32)
        s = store.latent_stats(latent)
        assert s["count"] == len(vals)
        assert s["max_act"] == pytest.approx(vals.max(), rel=1e-3)
        assert sum(s["hist_counts"]) == len(vals)
        assert len(s["deciles"]) == 9 and s["deciles"] == sorted(s["deciles"])
        assert s["frequency"] == pytest.approx(len(vals) / store.n_tokens())
        exact = np.quantile(vals, np.arange(1, 10) / 10, method="inverted_cdf")  # an order statistic
        assert np.abs(np.array(s["deciles"]) - exact).max() <= 2 * vals.max() / 4000 + 1e-4
        assert s["n_windows"] == len(WindowQueries(store, 4).activating(latent).window_ids)


def test_readonly_open_while_writer_holds_db(filled_store):
    store, truth = filled_store
    ro = ActivationStore.open(store.path, readonly=True)
    try:
        # The reader sees every committed activation, exactly as the writer's own connection does.
        assert ro.nnz() == store.nnz() == len(truth)
        for latent in range(8):
            (pos, vals), (wpos, wvals) = ro.latent_activations(latent), store.latent_activations(latent)
            assert pos.tolist() == wpos.tolist() and vals.tolist() == wvals.tolist()
        # It never writes, not even by mistake ...
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.db.execute("delete from staged")
        # ... and does not block the writer (WAL): a chunk committed meanwhile is visible to the reader.
        store.write_chunk(
            ChunkInfo(2, 4, 2, 30, 1),
            np.ones((2, 16), np.int64),
            np.array([7], np.int32),
            np.array([3], np.uint16),
            np.array([9.5], np.float16),
            0.0,
        )
        assert ro.db.execute("select count(*), sum(nnz) from chunks").fetchone() == (3, len(truth) + 1)
    finally:
        ro.close()
    assert store.nnz() == len(truth) + 1


def test_a_version_1_database_is_migrated_forward_keeping_its_cache(tmp_path):
    import sqlite_utils

    from autointerp.store.schema import MIGRATIONS

    path = tmp_path / "v1.db"
    db = sqlite_utils.Database(path)
    MIGRATIONS[1](db)  # exactly what autointerp with schema 1 created
    db.execute("insert into meta (key, value) values ('schema_version', '1')")
    db.execute("insert into events (at, stage, kind, message, data) values ('t', 'cache', 'end', 'done', '{}')")
    db.conn.commit()
    db.conn.close()
    with ActivationStore.open(path) as store:
        v = store.db.execute("select value from meta where key='schema_version'").fetchone()[0]
        assert int(v) == SCHEMA_VERSION == 11
        assert {
            "segments",
            "staged",
            "samples",
            "sample_sets",
            "explanations",
            "scores",
            "runs",
            "progress",
            "stages",
        } <= set(store.db.table_names())
        event = store.events()[0]
        assert event["message"] == "done" and event["run"] is None  # v3 added the column, kept the row


def test_schema_9_keeps_ratings_made_before_raters(tmp_path):
    """A schema-8 file's audits (one per latent and explainer, no rater) come through the rebuild of the table with
    the rater "unknown", and a second rater can then rate the same explanation beside them."""
    import sqlite3

    from helpers.schema import to_schema_8

    from autointerp.store.audits import write_audit
    from autointerp.store.synthetic import make_synthetic_db

    path = make_synthetic_db(tmp_path / "s.db", 40, explained=1.0, seed=3)
    write_audit(path, 5, "default", "seen", rater="ana", rating="wrong", note="too broad")
    with sqlite3.connect(path) as c:
        to_schema_8(c)
        assert [r[1] for r in c.execute("pragma table_info(audits)")].count("rater") == 0
    c.close()
    with ActivationStore.open(path) as store:
        rows = store.db.execute("select latent, rater, rating, note, explanation_seen from audits").fetchall()
        assert rows == [(5, "unknown", "wrong", "too broad", "seen")]
    row = write_audit(path, 5, "default", "seen", rater="bo", rating="correct")
    assert (row["rater"], row["rating"]) == ("bo", "correct")
    with sqlite3.connect(path) as c:
        got = c.execute("select rater, rating from audits where latent = 5 order by rater").fetchall()
    c.close()
    assert got == [("bo", "correct"), ("unknown", "wrong")]


def test_a_write_transaction_takes_the_lock_when_it_begins(tmp_path):
    """`with conn:` on a writing connection begins IMMEDIATE: the write lock is held from the start, so a transaction
    that reads before it writes never finds, at its first write, that another connection (the run log's, another
    process) wrote since its read. Begun deferred, that write failed at once with "database is locked" whatever the
    busy timeout (seen with `batch --ray`, whose workers report while a latent's explanation is written)."""
    import sqlite3

    from autointerp.store.connection import connect

    path = str(tmp_path / "w.db")
    a = connect(path)
    a.execute("pragma journal_mode = wal")
    with a:
        a.execute("create table t (x)")
    other = sqlite3.connect(path, timeout=0)
    with a:
        a.execute("select count(*) from t").fetchone()  # only a read so far
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("insert into t values (1)")  # yet the lock is a's
    other.execute("insert into t values (2)")  # released at the end of the block
    other.commit()
    assert a.execute("select x from t").fetchall() == [(2,)]
    ro = connect(f"file:{path}?mode=ro", uri=True)
    with ro:  # a read-only connection begins nothing (BEGIN IMMEDIATE would be refused)
        assert ro.execute("select count(*) from t").fetchone() == (1,)
