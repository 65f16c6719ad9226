"""Co-activation sketches: a one-permutation MinHash of each latent's set of activating windows, stored once.

SKETCH_BUCKETS uint32 per latent (33 MB at 131k latents, 256 MB at 1M, the same at any token count): a window id is
hashed (splitmix64's finaliser), its top bits pick the bucket, its low 32 bits are kept if smaller than what the
bucket holds. A bucket's value is a minimum, so the sketch does not depend on the order the windows come in: one
built inside compaction (store/onepass.py, unit by unit) equals one built by a pass over the segments.

Stored in `coactivation_sketches` (schema 14), one row per band of BAND latents, with the fingerprint of what they
were built from (the chunks and the window length): every process that samples co-activating examples reads them
(`load_sketches`) instead of decoding every segment again; a file without them (compacted before schema 14, or
read with another window length) builds them once and, if it may write, stores them.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .db import ActivationStore
from .layout import BAND, BAND_BITS, COMPACT_BUDGET, window_ids

SKETCH_BUCKETS = 64
EMPTY = np.uint32(0xFFFFFFFF)
_SHIFT = np.uint64(64 - int(np.log2(SKETCH_BUCKETS)))
HASH = "splitmix64"


def mix(w: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-mixed 64-bit hash of each window id (numpy wraps uint64 products)."""
    x = w.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def sketch_window_len(store: ActivationStore, window_len: int) -> int:
    """The window length the sketches use: WindowQueries' (never longer than a sequence)."""
    return min(int(window_len), int(store.provenance["seq_len"]))


def sketch_fingerprint(store: ActivationStore, window_len: int) -> str:
    return (
        f"{store.chunk_fingerprint()};window_len={sketch_window_len(store, window_len)};"
        f"buckets={SKETCH_BUCKETS};hash={HASH}"
    )


class BandSketch:
    """The sketches of one band's latents, filled from activations sorted by latent (positions ascending within
    each latent's run) in any number of calls."""

    def __init__(self, n_latents: int, seq_len: int, window_len: int):
        self.sig = np.full((n_latents, SKETCH_BUCKETS), EMPTY, np.uint32)
        self.seq_len, self.window_len = seq_len, min(window_len, seq_len)

    def add(self, local: np.ndarray, positions: np.ndarray) -> None:
        if not len(local):
            return
        w = window_ids(positions, self.seq_len, self.window_len)
        keep = np.ones(len(w), bool)  # a window once per run of equal windows (repeats change no minimum)
        keep[1:] = (w[1:] != w[:-1]) | (local[1:] != local[:-1])
        h = mix(w[keep])
        low = np.minimum(h & np.uint64(0xFFFFFFFF), np.uint64(0xFFFFFFFE)).astype(np.uint32)
        cells = local[keep].astype(np.intp) * SKETCH_BUCKETS + (h >> _SHIFT).astype(np.intp)
        np.minimum.at(self.sig.reshape(-1), cells, low)


def band_sketch_from_segments(store: ActivationStore, band: int, window_len: int) -> np.ndarray:
    """One band's sketches from its stored segments (a pass over them, COMPACT_BUDGET activations at a time)."""
    num_latents = int(store.provenance["num_latents"])
    first = band << BAND_BITS
    n = min(BAND, num_latents - first)
    sk = BandSketch(n, int(store.provenance["seq_len"]), window_len)
    local_parts: list[np.ndarray] = []
    pos_parts: list[np.ndarray] = []
    held = 0

    def flush() -> None:
        nonlocal local_parts, pos_parts, held
        if local_parts:
            sk.add(np.concatenate(local_parts), np.concatenate(pos_parts))
        local_parts, pos_parts, held = [], [], 0

    for latent, positions, _ in store.scan_segments(first, first + n):
        local_parts.append(np.full(len(positions), latent - first, np.uint16))
        pos_parts.append(positions)
        held += len(positions)
        if held >= COMPACT_BUDGET:
            flush()
    flush()
    return sk.sig


# ---- stored sketches ----------------------------------------------------------------------------------------------

UPSERT_SKETCH = "insert or replace into coactivation_sketches (band, fingerprint, latents, data) values (?, ?, ?, ?)"


def write_band_sketch(conn: sqlite3.Connection, band: int, fingerprint: str, sig: np.ndarray) -> None:
    """No transaction of its own: call it inside the one that writes what the sketch was built from."""
    conn.execute(UPSERT_SKETCH, [int(band), fingerprint, len(sig), np.ascontiguousarray(sig, "<u4").tobytes()])


def _has_table(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute("select 1 from sqlite_master where type = 'table' and name = 'coactivation_sketches'").fetchone()
        is not None
    )


def stored_bands(store: ActivationStore, fingerprint: str) -> set[int]:
    if not _has_table(store.db.conn):
        return set()
    rows = store.db.execute("select band from coactivation_sketches where fingerprint = ?", [fingerprint])
    return {r[0] for r in rows}


def load_sketches(store: ActivationStore, window_len: int, progress=None) -> np.ndarray:
    """Every latent's sketch [num_latents, SKETCH_BUCKETS]: the stored bands of this fingerprint, and the missing
    ones built from the segments (and stored, when the file may be written and is not busy)."""
    num_latents = int(store.provenance["num_latents"])
    fingerprint = sketch_fingerprint(store, window_len)
    sig = np.full((num_latents, SKETCH_BUCKETS), EMPTY, np.uint32)
    found: set[int] = set()
    if _has_table(store.db.conn):
        for band, n, data in store.db.execute(
            "select band, latents, data from coactivation_sketches where fingerprint = ?", [fingerprint]
        ):
            first = band << BAND_BITS
            if first + n <= num_latents:
                sig[first : first + n] = np.frombuffer(data, "<u4").reshape(n, SKETCH_BUCKETS)
                found.add(band)
    missing = [b for b in range(-(-num_latents // BAND)) if b not in found]
    built = []
    for band in missing:
        first = band << BAND_BITS
        part = band_sketch_from_segments(store, band, window_len)
        sig[first : first + len(part)] = part
        built.append((band, part))
        if progress is not None:
            progress(len(part))
    if built and not store.readonly and _has_table(store.db.conn):
        try:
            with store.db.conn:
                for band, part in built:
                    write_band_sketch(store.db.conn, band, fingerprint, part)
        except sqlite3.OperationalError:  # busy or read-only underneath: the sketches are still right, just not kept
            pass
    return sig
