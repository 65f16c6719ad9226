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
        assert int(v) == SCHEMA_VERSION == 14
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


def test_schema_12_gives_a_scored_file_the_metadata_its_scorers_declared(tmp_path):
    """A schema-11 file holds scores but no `scorers` table: the migration records what the scorers of that time
    declared (store/scorer_meta.py BEFORE_SCHEMA_12), keeps every score row, and a file with no scores gets none."""
    import sqlite3

    from helpers.schema import to_schema_11

    from autointerp.store.scorer_meta import BEFORE_SCHEMA_12, read_scorers
    from autointerp.store.synthetic import make_synthetic_db

    path = make_synthetic_db(tmp_path / "s.db", 40, explained=1.0, seed=3)
    with sqlite3.connect(path) as c:
        to_schema_11(c)
        n_scores = c.execute("select count(*) from scores").fetchone()[0]
    c.close()
    with ActivationStore.open(path) as store:
        assert read_scorers(store.db.conn) == {m.name: m for m in BEFORE_SCHEMA_12}
        assert store.db.execute("select count(*) from scores").fetchone()[0] == n_scores > 0
    empty = tmp_path / "empty.db"
    with ActivationStore.open(empty, create=True) as store:
        assert read_scorers(store.db.conn) == {}


def _schema_1_file(path) -> None:
    """An empty file exactly as autointerp with schema 1 created it (without the auto_vacuum pragma, which came later)."""
    import sqlite_utils

    from autointerp.store.schema import MIGRATIONS

    db = sqlite_utils.Database(path)
    MIGRATIONS[1](db)
    db.execute("insert into meta (key, value) values ('schema_version', '1')")
    db.conn.commit()
    db.conn.close()


def _schema_of(path) -> dict:
    """What SQLite reports of a file's schema: per table its columns (name, declared type, not null, default, primary
    key position, in order), its indexes with their columns, and the text of every trigger, virtual table and explicit
    index with its layout flattened. Declared types compare without case (SQLite reads them so); a CREATE TABLE's own
    text is not compared (the current schema lays it out with comments)."""
    conn = sqlite3.connect(path)
    try:
        objects = conn.execute("select type, name, sql from sqlite_master").fetchall()
        tables = sorted(name for kind, name, _ in objects if kind == "table")
        columns = {
            t: [(c[1], c[2].upper(), c[3], c[4], c[5]) for c in conn.execute(f"pragma table_info('{t}')")]
            for t in tables
        }
        indexes = {
            t: sorted(
                (i[1], i[2], i[3], i[4], [c[2] for c in conn.execute(f"pragma index_info('{i[1]}')")])
                for i in conn.execute(f"pragma index_list('{t}')")
            )
            for t in tables
        }
        texts = {
            name: " ".join(sql.split())
            for kind, name, sql in objects
            if sql and (kind in ("trigger", "index") or sql.upper().startswith("CREATE VIRTUAL TABLE"))
        }
        meta = dict(conn.execute("select key, value from meta").fetchall())
        rows = {t: conn.execute(f"select * from '{t}'").fetchall() for t in tables}
        pragmas = {p: conn.execute(f"pragma {p}").fetchone()[0] for p in ("auto_vacuum", "journal_mode")}
        return {
            "columns": columns,
            "indexes": indexes,
            "texts": texts,
            "meta": meta,
            "rows": rows,
            "pragmas": pragmas,
        }
    finally:
        conn.close()


def test_a_new_file_and_one_migrated_from_schema_1_hold_the_same_schema(tmp_path):
    """A new file is made from the current schema written out (store/schema_current.py), an older one reaches it
    through every migration: both hold the same tables and columns in the same order, keys, indexes, triggers, the
    full-text table, meta rows and rows (none but meta's and the empty full-text index's). Only auto_vacuum differs:
    SQLite fixes it when a file's first table is made, and files made before schema 7 were made without it."""
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    ActivationStore.open(fresh, create=True).close()
    _schema_1_file(old)
    ActivationStore.open(old).close()
    new, migrated = _schema_of(fresh), _schema_of(old)
    assert new["pragmas"] == {"auto_vacuum": 2, "journal_mode": "wal"}  # 2: incremental
    assert migrated["pragmas"] == {"auto_vacuum": 0, "journal_mode": "wal"}
    for part in ("columns", "indexes", "texts", "meta", "rows"):
        assert new[part] == migrated[part], part
    assert new["meta"] == {"schema_version": str(SCHEMA_VERSION), "codec": "zstd1-planes-v2"}
    assert {"scorers", "segments", "audits", "workers", "explanations_fts"} <= set(new["columns"])
    assert set(new["texts"]) == {"explanations_fts", "explanations_ai", "explanations_ad", "explanations_au"} | {
        "scores_by_scorer"
    }


def test_the_code_writes_and_reads_a_migrated_file_as_a_new_one(tmp_path):
    """Every table and column the store's writers and readers use exists either way: the synthetic database (a
    compacted cache, statistics, explanations with full-text search, scores, packed columns, stages, a run) built in a
    new file and in one migrated from schema 1 holds the same rows, timestamps of the moment aside."""
    from autointerp.store.synthetic import make_synthetic_db

    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    _schema_1_file(old)
    for path in (fresh, old):
        make_synthetic_db(path, 40, seed=5)
    new, migrated = _schema_of(fresh), _schema_of(old)
    assert new["columns"] == migrated["columns"]
    for table, columns in new["columns"].items():
        moment = [i for i, c in enumerate(columns) if c[0] in ("at", "committed_at") or c[0].endswith("_at")]
        keep = [[v for i, v in enumerate(row) if i not in moment] for row in new["rows"][table]]
        assert keep == [[v for i, v in enumerate(row) if i not in moment] for row in migrated["rows"][table]], table
    assert new["rows"]["explanations"] and new["rows"]["scores"] and new["rows"]["columns"]
    search = "select rowid from explanations_fts where explanations_fts match 'token' order by rowid"
    with sqlite3.connect(fresh) as a, sqlite3.connect(old) as b:
        assert a.execute(search).fetchall() == b.execute(search).fetchall() != []
    a.close()
    b.close()


def test_every_table_of_a_new_file_takes_a_later_migrations_alter_table(tmp_path):
    """The written-out schema's comments stay in its source: SQLite stores a CREATE statement as written, and DROP
    COLUMN of a last column cuts it back to the previous comma, one inside a comment included. Every table of a new
    file takes an added column and drops it again (and its last original column) as a migration would."""
    path = tmp_path / "new.db"
    ActivationStore.open(path, create=True).close()
    conn = sqlite3.connect(path)
    try:
        stored = conn.execute("select name, sql from sqlite_master where type = 'table' and sql is not null").fetchall()
        assert all("--" not in sql for _, sql in stored)
        for table, sql in stored:
            if sql.startswith("CREATE VIRTUAL") or table.startswith("explanations_fts_"):
                continue
            names = [c[1] for c in conn.execute(f"pragma table_info('{table}')")]
            conn.execute(f"alter table {table} add column later_one TEXT")
            conn.execute(f"alter table {table} drop column later_one")
            last = [c[1] for c in conn.execute(f"pragma table_info('{table}')") if not c[5]][-1]  # not a key
            conn.execute(f"alter table {table} drop column {last}")
            assert [c[1] for c in conn.execute(f"pragma table_info('{table}')")] == [n for n in names if n != last]
    finally:
        conn.close()
