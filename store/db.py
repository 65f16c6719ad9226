"""ActivationStore: the SQLite file that is the single source of truth.

Knows no models: it stores token sequences, latent-major packed activations, per-latent
statistics, provenance and events. Writers use WAL so readers (the TUI, a second batch
process) never block them.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlite_utils

from .clock import now
from .codec import decode_segment, decode_staged, encode_staged_rows
from .columns import pack_stat_columns
from .connection import connect
from .errors import AutointerpError, CannotContinue, UserError
from .layout import BAND_BITS, band_of
from .schema import (
    SchemaError,
    check_codec,
    check_version,
    chunk_fingerprint,
    ensure_schema,
    implied_stages,
    read_version,
)
from .stages import CACHE_STATS

# Fields that say which activations a database holds; reusing a database for another value
# of any of them would mix incompatible activations.
IDENTITY_FIELDS = ("model", "hook", "coder_kind", "coder_hash", "corpus_hash", "seq_len", "chunk_seqs")


class StoreError(UserError):
    """A problem with the database file, stated in one line."""


def describe_database_error(path, e: sqlite3.Error) -> str:
    """One line for an SQLite error met while reading or opening a file."""
    text = str(e)
    if "not a database" in text or "file is encrypted" in text:
        return f"{path} is not an SQLite database ({text})"
    if "malformed" in text or "corrupt" in text:
        return f"{path} is corrupt ({text}); restore it from a copy"
    return f"{path}: {text}"


class DatabaseUnwritable(CannotContinue):
    """The database cannot take a write now: locked by another process, read-only, or the disk is full. Nothing is
    wrong with the file; everything committed is kept and a rerun resumes once that is fixed."""


# Why SQLite refused, by its primary result code (the low byte of an extended one).
_WHY_NOT = {
    5: "the database is locked by another process that holds a long write",  # SQLITE_BUSY
    6: "the database is locked by another process that holds a long write",  # SQLITE_LOCKED
    8: "the database file (or its folder) is read-only",  # SQLITE_READONLY
    13: "the disk is full (or a file-size limit was reached)",  # SQLITE_FULL
    10: "the disk could not be written (a full disk, a file-size limit or a failing device)",  # SQLITE_IOERR
}


def why_not_written(e: sqlite3.Error, reading: bool = False) -> str | None:
    """Why SQLite could not write (locked, read-only, disk full), or None when the error says something else.
    `reading`: only a lock counts (an I/O error met while reading says something of the file itself)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        code &= 0xFF
    else:  # an error made without a result code: its text is all there is
        low = str(e).lower()
        texts = {5: ("locked", "busy"), 8: ("readonly", "read-only"), 13: ("full",), 10: ("disk i/o",)}
        code = next((c for c, words in texts.items() if any(w in low for w in words)), None)
    if reading and code not in (5, 6):
        return None
    return _WHY_NOT.get(code) if code is not None else None


def write_failure(path, e: sqlite3.Error, doing: str = "write") -> AutointerpError:
    """What a failed database operation is raised as: DatabaseUnwritable naming why (locked, read-only, disk full;
    any other refusal of a write), or StoreError when the file itself is damaged (bad input)."""
    why = why_not_written(e, reading=doing == "read")
    if why is None and not isinstance(e, sqlite3.OperationalError):
        return StoreError(describe_database_error(path, e))
    return DatabaseUnwritable(
        f"cannot {doing} {path}: {why or f'the database refused the {doing}'} ({e}); everything committed is kept"
    )


def check_file(db: sqlite_utils.Database, path, *, empty_ok: bool, older_ok: bool) -> int:
    """The schema version of an open file this autointerp can use (0: an empty file, when `empty_ok`); raises
    SchemaError naming why not. Reads only: shared by `preflight` and read-only opens."""
    version = read_version(db)
    if version == 0:
        if not empty_ok:
            raise SchemaError("not an autointerp database (an empty file)")
        return 0
    check_version(version, path, readonly=not older_ok)
    check_codec(db, version)
    return version


def why_not_creatable(path: Path) -> str | None:
    """Why a file cannot be made at `path` (its nearest existing folder is a file, or not writable), else None."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the folder {parent} is not writable"
    return None


def check_database_path(path: Path, *, must_exist: bool = True) -> bool:
    """Whether a database file is at `path`; refused in one line (StoreError) when the path is a directory, or when
    there is nothing there and `must_exist`. Every opener of a database checks its path here first."""
    if path.is_dir():
        raise StoreError(f"database path {path} is a directory")
    if not path.exists():
        if must_exist:
            raise StoreError(f"database {path} does not exist")
        return False
    return True


def preflight(path: str | Path, *, must_exist: bool, writing: bool, integrity: bool = True) -> int | None:
    """Check a database file before a command does anything with it, through a read-only connection: nothing
    is written, whatever the outcome. Returns the schema version (0: an empty file, which only a command that
    can start a database from nothing accepts), or None when there is no file yet (`must_exist=False`: a
    command that creates one). Raises StoreError with one line naming the problem.

    `integrity` runs SQLite's quick_check (every page's structure, not the packed arrays' contents), so a
    truncated or page-corrupted file is refused before a command writes its first row into it."""
    path = Path(path)
    if not check_database_path(path, must_exist=must_exist):
        why = why_not_creatable(path)
        if why:
            raise StoreError(f"cannot create database {path}: {why}")
        return None
    if writing and not os.access(path, os.W_OK):
        raise DatabaseUnwritable(
            f"cannot write {path}: the database file is read-only; nothing was written, rerun once it is writable"
        )
    try:
        conn = connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open database {path} ({e})") from None
    try:
        # An empty file is a new database to a command that makes one, and nothing to read to the others.
        version = check_file(sqlite_utils.Database(conn), path, empty_ok=not must_exist, older_ok=writing)
        if version and integrity:
            problem = conn.execute("pragma quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise StoreError(f"{path} is corrupt ({problem}); restore it from a copy")
        return version
    except SchemaError as e:
        raise StoreError(f"{path}: {e}") from None
    except sqlite3.DatabaseError as e:
        if why_not_written(e, reading=True):  # locked by a writer (a rollback journal): no damage, a stop
            raise write_failure(path, e, "read") from None
        raise StoreError(describe_database_error(path, e)) from None
    finally:
        conn.close()


@dataclass(frozen=True)
class ChunkInfo:
    id: int
    first_seq: int
    n_seqs: int
    n_tokens: int
    nnz: int


class ActivationStore:
    """One autointerp database. Open with `ActivationStore.open(path)`."""

    def __init__(self, db: sqlite_utils.Database, path: Path, readonly: bool):
        self.db = db
        self.path = path
        self.readonly = readonly
        self._chunks: dict[int, ChunkInfo] | None = None
        self._prov: dict | None = None

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, create: bool = False, readonly: bool = False, allow_older: bool = False):
        """Open a database. Read-only connections never write (not even a migration); `allow_older` lets a
        read-only look at an older schema (a command checking its inputs before it migrates and writes)."""
        path = Path(path)
        check_database_path(path, must_exist=not create)
        try:
            if readonly:
                conn = connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = connect(str(path), check_same_thread=False)
        except (sqlite3.Error, OSError) as e:
            raise StoreError(f"cannot open database {path} ({e})") from None
        db = sqlite_utils.Database(conn)
        try:
            if readonly:
                check_file(db, path, empty_ok=False, older_ok=allow_older)
            else:
                ensure_schema(db)
                # WAL: readers in other processes never block the writer and vice versa.
                db.enable_wal()
                conn.execute("pragma synchronous = normal")
        except SchemaError as e:
            conn.close()
            raise StoreError(f"{path}: {e}") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            if why_not_written(e, reading=readonly):  # locked, read-only, disk full: the file is fine
                raise write_failure(path, e, "read" if readonly else "write") from None
            raise StoreError(describe_database_error(path, e)) from None
        return cls(db, path, readonly)

    def close(self) -> None:
        self.db.conn.close()

    @staticmethod
    def set_aside(path: str | Path) -> Path:
        """Move a database out of the way whole (`batch --redo cache`): its WAL folded in first under an exclusive
        lock (a process still writing makes this fail, nothing moved), then the file renamed to `NAME.before-redo-N`
        beside it. Nothing in it is deleted; returns the new name."""
        path = Path(path)
        try:
            conn = sqlite3.connect(str(path), timeout=1.0, isolation_level=None)  # explicit transactions only
            try:
                conn.execute("begin exclusive")
                conn.execute("rollback")
                conn.execute("pragma wal_checkpoint(truncate)")
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"cannot set {path} aside ({e}): is a batch still running on it?") from None
        n = 1
        while (aside := path.with_name(f"{path.name}.before-redo-{n}")).exists():
            n += 1
        os.replace(path, aside)
        for suffix in ("-wal", "-shm"):  # empty after the checkpoint; they belong to the old name
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return aside

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- provenance ----------------------------------------------------------------------

    def forget_cached(self) -> None:
        """Drop the provenance and chunk list read so far: another process may have written since."""
        self._chunks = self._prov = None

    @property
    def provenance(self) -> dict | None:
        if self._prov is None:
            rows = list(self.db["provenance"].rows_where("id = 1"))
            self._prov = rows[0] if rows else None
        return self._prov

    def check_claim(self, identity: dict) -> None:
        """Raise StoreError naming the first identity field (of those given) in which this database's cache
        differs; reads only."""
        existing = self.provenance
        if existing is None:
            return
        for field in IDENTITY_FIELDS:
            if field in identity and existing[field] != identity[field]:
                raise StoreError(
                    f"{self.path} holds activations for {field}={existing[field]!r}, "
                    f"not {identity[field]!r}; use another --db or delete it"
                )

    def claim(self, prov: dict) -> None:
        """Record the provenance of a new cache, or check an existing one has the same identity.

        Raises StoreError naming the first differing field; writes nothing in that case.
        """
        if self.provenance is not None:
            self.check_claim(prov)
            return
        row = dict(prov, id=1, created_at=now())
        for key in ("versions", "config"):
            if not isinstance(row.get(key), str):
                row[key] = json.dumps(row.get(key), sort_keys=True)
        with self.db.conn:
            self.db["provenance"].insert(row)
        self._prov = None

    def update_provenance(self, **fields) -> None:
        """Fill in provenance columns of an existing cache (what `upgrade` learns of a cache made before them)."""
        sets = ", ".join(f"{name} = ?" for name in fields)  # names are this code's own, never a user's
        with self.db.conn:
            self.db.execute(f"update provenance set {sets} where id = 1", list(fields.values()))
        self._prov = None

    # ---- chunks and sequences --------------------------------------------------------------

    def chunks(self) -> dict[int, ChunkInfo]:
        if self._chunks is None:
            self._chunks = {
                r[0]: ChunkInfo(*r)
                for r in self.db.execute("select id, first_seq, n_seqs, n_tokens, nnz from chunks order by id")
            }
        return self._chunks

    def n_sequences(self) -> int:
        return sum(c.n_seqs for c in self.chunks().values())

    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks().values())

    def token_dtype(self) -> np.dtype:
        return np.dtype(self.provenance["token_dtype"])

    def write_chunk(
        self,
        chunk: ChunkInfo,
        sequences: np.ndarray,
        latents: np.ndarray,
        offsets: np.ndarray,
        acts: np.ndarray,
        seconds: float,
        next_doc: int | None = None,
        carry: np.ndarray | None = None,
    ) -> None:
        """Commit one chunk atomically: its sequences, its activations (staged, one row per band of latents; see
        store/layout.py) and its chunk row.

        `next_doc` and `carry` (token ids) say where the corpus reader stands after this chunk's sequences, so a
        resumed cache starts there (`resume_point`). Only the newest chunk keeps its carry: the one before drops it
        in the same transaction, so the file holds at most one.

        `latents`, `offsets` (uint16, from the chunk's first token) and `acts` (float16) are flat arrays of the
        chunk's nonzero activations in any order.
        """
        tok_dtype = self.token_dtype()
        bands = band_of(latents)
        # Offsets arrive ascending, so a stable sort by band (a radix sort on uint16 keys, ~15x faster than sorting
        # by latent) keeps each band's offsets ascending; lexsort covers callers that pass them in any order.
        if len(offsets) > 1 and np.all(offsets[1:] >= offsets[:-1]):
            order = np.argsort(bands, kind="stable")
        else:
            order = np.lexsort((offsets, bands))
        bands, latents, offsets, acts = bands[order], latents[order], offsets[order], acts[order]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(bands)) + 1]) if len(bands) else np.zeros(0, np.int64)
        counts = np.diff(np.append(starts, len(bands)))
        local = (latents & ((1 << BAND_BITS) - 1)).astype(np.uint16)
        blobs = encode_staged_rows(local, offsets, acts, starts)
        rows = ((int(bands[s]), chunk.id, int(n), blob) for s, n, blob in zip(starts.tolist(), counts.tolist(), blobs))
        seq_rows = (
            (chunk.first_seq + i, chunk.id, np.ascontiguousarray(seq, dtype=tok_dtype).tobytes())
            for i, seq in enumerate(sequences)
        )
        conn = self.db.conn
        with conn:
            conn.executemany("insert into staged (band, chunk, n, data) values (?, ?, ?, ?)", rows)
            conn.executemany("insert into sequences (id, chunk, tokens) values (?, ?, ?)", seq_rows)
            conn.execute(
                "insert into chunks (id, first_seq, n_seqs, n_tokens, nnz, seconds, committed_at, next_doc, carry)"
                " values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    chunk.id,
                    chunk.first_seq,
                    chunk.n_seqs,
                    chunk.n_tokens,
                    chunk.nnz,
                    seconds,
                    now(),
                    next_doc,
                    None if carry is None else np.ascontiguousarray(carry, dtype=np.uint32).tobytes(),
                ),
            )
            if carry is not None:
                conn.execute("update chunks set carry = null where id < ? and carry is not null", (chunk.id,))
        self._chunks = None

    def resume_point(self) -> tuple[int, int, np.ndarray] | None:
        """(chunks, next_doc, carry) when the committed chunks are 0..k-1 and the last one recorded where the corpus
        reader stood after it; None otherwise (chunks from before schema 8, or none): re-read from the start."""
        done = self.chunks()
        if not done or max(done) != len(done) - 1 or "next_doc" not in self.db["chunks"].columns_dict:
            return None  # no chunks, a gap, or a file from before schema 8 looked at read-only
        row = self.db.execute("select next_doc, carry from chunks where id = ?", (len(done) - 1,)).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return None
        return len(done), int(row[0]), np.frombuffer(row[1], dtype=np.uint32).astype(np.int64)

    def sequences(self, ids) -> dict[int, np.ndarray]:
        ids = sorted({int(i) for i in ids})
        out: dict[int, np.ndarray] = {}
        dtype = self.token_dtype()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            q = f"select id, tokens from sequences where id in ({','.join('?' * len(part))})"
            for sid, blob in self.db.execute(q, part):
                out[sid] = np.frombuffer(blob, dtype=dtype)
        return out

    # ---- activations ----------------------------------------------------------------------

    def latent_activations(self, latent: int) -> tuple[np.ndarray, np.ndarray]:
        """All cached activations of one latent: (global token positions int64, values float32).

        A global position is `sequence_id * seq_len + position_in_sequence`, sorted ascending. Reads the latent's
        segments and its band's staged rows (chunks not yet compacted) in one statement, so one snapshot: a
        compaction committing meanwhile can never make an activation appear twice or not at all."""
        latent = int(latent)
        seq_len = self.provenance["seq_len"]
        pos_parts, act_parts = [], []
        chunks = None
        for staged, chunk, first_pos, width, packed, n, data in self.db.execute(
            "select 0, seg, first_pos, width, packed, n, data from segments where latent = ?"
            " union all select 1, chunk, 0, 0, 0, n, data from staged where band = ?"
            " order by 1, 2",
            [latent, latent >> BAND_BITS],
        ):
            if staged:
                chunks = chunks or self.chunks()
                if chunk not in chunks:  # committed by a writer in another process since this store read them
                    self._chunks = None
                    chunks = self.chunks()
                local, offsets, values = decode_staged(data, n)
                mine = local == (latent & ((1 << BAND_BITS) - 1))
                pos_parts.append(offsets[mine] + chunks[chunk].first_seq * seq_len)
                act_parts.append(values[mine])
            else:
                positions, values = decode_segment(first_pos, width, packed, n, data)
                pos_parts.append(positions)
                act_parts.append(values)
        if not pos_parts:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return np.concatenate(pos_parts), np.concatenate(act_parts).astype(np.float32)

    def scan_segments(self, lo: int, hi: int):
        """Yield (latent, global positions, values float16) for every segment of latents lo..hi-1, in latent then
        position order: one segment decoded at a time, so a pass over any width and length holds one segment."""
        for latent, first_pos, width, packed, n, data in self.db.execute(
            "select latent, first_pos, width, packed, n, data from segments"
            " where latent >= ? and latent < ? order by latent, seg",
            [int(lo), int(hi)],
        ):
            yield (latent, *decode_segment(first_pos, width, packed, n, data))

    def n_staged(self) -> int:
        """Staged rows not yet compacted (0 once the cache is compacted)."""
        return self.db.execute("select count(*) from staged").fetchone()[0]

    def nnz(self) -> int:
        return sum(c.nnz for c in self.chunks().values())

    # ---- stages: explicit completion ----------------------------------------------------------

    def chunk_fingerprint(self) -> str:
        return chunk_fingerprint(self.db)

    def stats_fingerprint(self, window_len: int) -> str:
        return f"{self.chunk_fingerprint()};window_len={int(window_len)}"

    def stage(self, name: str) -> dict | None:
        """A stage's row: {fingerprint, detail (dict), done_at (None while it runs)}, or None. An older file
        opened read-only answers with the rows its migration will write."""
        if self.readonly and "stages" not in self.db.table_names():
            row = next((r[1:] for r in implied_stages(self.db) if r[0] == name), None)
        else:
            row = self.db.execute("select fingerprint, detail, done_at from stages where name = ?", [name]).fetchone()
        if row is None:
            return None
        return {"fingerprint": row[0], "detail": json.loads(row[1] or "{}"), "done_at": row[2]}

    def stage_done(self, name: str, fingerprint: str) -> bool:
        """The stage ended, over exactly what the file holds now."""
        s = self.stage(name)
        return s is not None and s["done_at"] is not None and s["fingerprint"] == fingerprint

    def set_stage(self, name: str, fingerprint: str, detail: dict, done: bool) -> None:
        """Record a stage's state. No transaction of its own: call it inside the transaction that writes the
        stage's output, so the two are committed (or lost to a kill) together."""
        self.db.execute(
            "insert or replace into stages (name, fingerprint, detail, done_at) values (?, ?, ?, ?)",
            [name, fingerprint, json.dumps(detail, sort_keys=True), now() if done else None],
        )

    def stats_done(self, window_len: int) -> bool:
        return self.stage_done(CACHE_STATS, self.stats_fingerprint(window_len))

    # ---- per-latent statistics -------------------------------------------------------------

    def write_latent_stats(self, rows: list[dict], stage: tuple[str, dict, bool] | None = None) -> None:
        """Upsert statistics rows; `stage` = (fingerprint, detail, done) is recorded in the same transaction."""
        with self.db.conn:
            self.db["latents"].upsert_all(rows, pk="latent")
            if stage is not None:
                self.set_stage(CACHE_STATS, *stage)
                if stage[2]:  # the last batch: the list's sort columns, packed from the finished statistics
                    pack_stat_columns(self.db.conn, stage[0])

    def latent_stats(self, latent: int) -> dict | None:
        rows = list(self.db["latents"].rows_where("latent = ?", [int(latent)]))
        if not rows:
            return None
        row = rows[0]
        for key in ("deciles", "hist_edges", "hist_counts"):
            row[key] = json.loads(row[key])
        return row

    # ---- events ---------------------------------------------------------------------------

    def log_event(self, stage: str, kind: str, message: str, data: dict | None = None) -> None:
        with self.db.conn:
            self.db["events"].insert(
                {
                    "at": now(),
                    "stage": stage,
                    "kind": kind,
                    "message": message,
                    "data": json.dumps(data or {}, sort_keys=True),
                }
            )

    @property
    def results(self):
        from .results import Results

        return Results(self.db)

    def events(self, limit: int = 50) -> list[dict]:
        return list(self.db["events"].rows_where(order_by="id desc", limit=limit))
