"""Where activations live, in two tables (see store/schema.py, version 7):

- `staged`: while caching, each committed chunk adds one row per band of BAND latents, in chunk order. A chunk's
  commit writes (latents / BAND) rows, not one per (latent, chunk): at 131k latents that is 32 rows, not ~100k.
- `segments`: compaction (store/compact.py) turns a band's staged rows into latent-major segments of at most
  SEGMENT activations each, so reading one latent is one index range, and the row count grows with latents plus
  activations / SEGMENT, never with latents x chunks.

A reader sees every activation exactly once at any moment: compaction writes a band's segments and deletes its
staged rows in one transaction, and `ActivationStore.latent_activations` reads both tables in one statement.
"""

from __future__ import annotations

import numpy as np

from .codec import Segment, encode_segment

BAND_BITS = 12
BAND = 1 << BAND_BITS  # latents per band; ids within a band fit uint16
SEGMENT = 1 << 16  # activations per segment at most: bounds what one read decodes and what compaction holds
COMPACT_BUDGET = 8_000_000  # activations compaction holds at once (about 150 MB with its sort and packing)


def band_of(latents: np.ndarray) -> np.ndarray:
    return (np.asarray(latents) >> BAND_BITS).astype(np.uint16)


def segment_bounds(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end indices of the segments of activations sorted by latent: a new segment at every change of
    latent and every SEGMENT activations within one latent's run."""
    n = len(latents)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    runs = np.concatenate([[0], np.flatnonzero(np.diff(latents)) + 1])
    run_ends = np.append(runs[1:], n)
    long = np.flatnonzero(run_ends - runs > SEGMENT)
    if len(long):  # few latents are this dense: a Python loop over them only
        extra = [np.arange(runs[i] + SEGMENT, run_ends[i], SEGMENT) for i in long]
        runs = np.sort(np.concatenate([runs, *extra]))
    return runs, np.append(runs[1:], n)


def segment_rows(latent: int, first_seg: int, positions: np.ndarray, values: np.ndarray):
    """(latent, seg, Segment) rows of one latent's ascending positions, SEGMENT activations at most each."""
    for i, s in enumerate(range(0, len(positions), SEGMENT)):
        yield latent, first_seg + i, encode_segment(positions[s : s + SEGMENT], values[s : s + SEGMENT])


def segment_record(latent: int, seg: int, s: Segment) -> tuple:
    """The row as `insert into segments` takes it (SEGMENT_COLUMNS)."""
    return (latent, seg, s.n, s.max_act, s.first_pos, s.width, s.packed, s.data)


SEGMENT_COLUMNS = "latent, seg, n, max_act, first_pos, width, packed, data"
INSERT_SEGMENT = f"insert into segments ({SEGMENT_COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?)"


def window_ids(positions: np.ndarray, seq_len: int, window_len: int) -> np.ndarray:
    """The global window id of each global token position: windows of `window_len` tokens tile each sequence of
    `seq_len` (the last one of a sequence may be short), numbered sequence by sequence."""
    seq, pos = np.divmod(positions, seq_len)
    return seq * -(-seq_len // window_len) + pos // window_len
