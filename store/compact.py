"""Compaction: staged (chunk, band) rows into latent-major segments, one bounded unit of work at a time.

A unit is one band's staged rows over a run of consecutive chunks holding at most COMPACT_BUDGET activations.
Its segments are inserted and its staged rows deleted in one transaction, so a kill -9 anywhere leaves either
the unit staged or the unit compacted, never both or neither; the rerun takes the staged rows that are left, in
the same order and the same units (the split is greedy from the first staged chunk of the band), and ends with
the same segments an uninterrupted run writes. Freed pages of deleted staged rows are reused by later segments.

A `hook` (store/onepass.py) sees each unit's activations as compaction holds them, and writes what it derived
from a band (statistics, filter rows, co-activation sketches) in the transaction of the band's last unit.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .codec import decode_staged, encode_segment
from .db import ActivationStore
from .killpoints import kill_point
from .layout import BAND, BAND_BITS, COMPACT_BUDGET, INSERT_SEGMENT, segment_bounds, segment_record


def units(rows: list[tuple[int, int]], budget: int) -> list[list[int]]:
    """Chunk ids of a band's staged rows [(chunk, n), ...] in order, grouped greedily under `budget` activations
    (a single row over it is a unit of its own)."""
    out: list[list[int]] = []
    held = budget + 1
    for chunk, n in rows:
        if held + n > budget:
            out.append([])
            held = 0
        out[-1].append(chunk)
        held += n
    return out


class UnitHook(Protocol):
    """What compaction computes on the way from the activations it holds (store/onepass.py: statistics, filters,
    co-activation sketches), band by band, written in the transaction of each band's last unit."""

    def bands(self) -> list[int]:
        """The bands it needs, staged or not (a band with nothing staged is visited for its rows alone)."""
        ...

    def begin_band(self, band: int) -> None:
        """Start a band: accumulate whatever of it is already compacted (a resumed or extended cache)."""
        ...

    def add(self, local: np.ndarray, positions: np.ndarray, values: np.ndarray, starts, ends) -> None:
        """A unit's activations sorted by latent (positions ascending), [starts, ends) its segments."""
        ...

    def finish_band(self, band: int) -> None:
        """Every activation of the band was added: compute its rows (before the last transaction opens)."""
        ...

    def write_band(self, band: int) -> None:
        """Write the band's rows, inside the transaction of its last unit (no transaction of its own)."""
        ...


def compact(store: ActivationStore, progress=None, budget: int = COMPACT_BUDGET, hook: UnitHook | None = None) -> int:
    """Compact every staged row; returns the activations moved. `progress(latents)` hears each finished band;
    `hook` sees every unit's activations (and, for the bands it needs, those already compacted)."""
    bands = [r[0] for r in store.db.execute("select distinct band from staged order by band")]
    wanted = set(hook.bands()) if hook is not None else set()
    moved = 0
    num_latents = int(store.provenance["num_latents"]) if store.provenance else 0
    for band in sorted(set(bands) | wanted):
        rows = store.db.execute("select chunk, n from staged where band = ? order by chunk", [band]).fetchall()
        todo = units(rows, budget)
        mine = hook if band in wanted else None
        if mine is not None:
            mine.begin_band(band)
            if not todo:  # nothing staged: the band's rows only
                mine.finish_band(band)
                with store.db.conn:
                    mine.write_band(band)
                kill_point("cache.compact")
        for i, unit in enumerate(todo):
            moved += compact_unit(store, band, unit, mine, last=i == len(todo) - 1)
            kill_point("cache.compact")
        if progress is not None:
            progress(min(BAND, num_latents - band * BAND))
    if moved:
        # Segments took the place of staged rows, page by page, as units committed; what stays free at the end
        # goes back to the file system (a file made before schema 7 has no auto-vacuum: a no-op there). Through
        # executescript: the pragma frees one page per step, and `execute` steps once (it left every page free).
        store.db.conn.executescript("pragma incremental_vacuum")
    return moved


def compact_unit(
    store: ActivationStore, band: int, chunk_ids: list[int], hook: UnitHook | None = None, last: bool = False
) -> int:
    seq_len = int(store.provenance["seq_len"])
    chunks = store.chunks()
    lo, hi = chunk_ids[0], chunk_ids[-1]
    local_parts, pos_parts, val_parts = [], [], []
    for chunk, n, data in store.db.execute(
        "select chunk, n, data from staged where band = ? and chunk >= ? and chunk <= ? order by chunk",
        [band, lo, hi],
    ):
        local, offsets, values = decode_staged(data, n)
        local_parts.append(local)
        pos_parts.append(offsets + chunks[chunk].first_seq * seq_len)
        val_parts.append(values)
    if not local_parts:
        return 0
    local = np.concatenate(local_parts)
    # Positions ascend within each chunk's row and chunks come in order, so a stable sort by latent (a radix sort:
    # uint16 keys) leaves every latent's positions ascending.
    order = np.argsort(local, kind="stable")
    local, positions, values = local[order], np.concatenate(pos_parts)[order], np.concatenate(val_parts)[order]
    del local_parts, pos_parts, val_parts, order
    first = band << BAND_BITS
    # A band compacted before (a cache extended after its compaction) continues its latents' segment numbers.
    next_seg = dict(
        store.db.execute(
            "select latent, max(seg) + 1 from segments where latent >= ? and latent < ? group by latent",
            [first, first + BAND],
        ).fetchall()
    )
    starts, ends = segment_bounds(local)
    if hook is not None:
        hook.add(local, positions, values, starts, ends)
        if last:
            hook.finish_band(band)
    records = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        latent = first + int(local[s])
        seg = next_seg.get(latent, 0)
        next_seg[latent] = seg + 1
        records.append(segment_record(latent, seg, encode_segment(positions[s:e], values[s:e])))
    conn = store.db.conn
    with conn:
        conn.executemany(INSERT_SEGMENT, records)
        conn.execute("delete from staged where band = ? and chunk >= ? and chunk <= ?", [band, lo, hi])
        if hook is not None and last:
            hook.write_band(band)
    return len(local)
