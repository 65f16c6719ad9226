"""Per-latent statistics computed from the stored activations (count, frequency, max, deciles, histogram).

One ordered scan of the segments per batch of latents, one segment held at a time: memory does not grow with
tokens. Deciles come from the fine histogram: exact to within max_act / FINE_BINS.

The cache stage computes the same rows inside compaction (store/onepass.py); this pass runs for a file compacted
before that, or one whose statistics are stale (other chunks, another window length).
"""

from __future__ import annotations

import json

import numpy as np

from .columns import pack_stat_columns
from .compact import compact
from .db import ActivationStore
from .killpoints import kill_point
from .layout import window_ids
from .stages import CACHE_STATS

HIST_BINS = 20
FINE_BINS = 4000  # a multiple of HIST_BINS


def _round(xs) -> str:
    return json.dumps([round(float(x), 5) for x in xs])


def latent_stats(store: ActivationStore, latent: int, window_len: int, n_tokens: int) -> dict:
    compact(store)  # statistics read segments: nothing may still be staged (a no-op once compacted)
    return batch_stats(store, latent, latent + 1, window_len, n_tokens)[0]


def batch_stats(store: ActivationStore, lo: int, hi: int, window_len: int, n_tokens: int) -> list[dict]:
    """The statistics rows of latents lo..hi-1, from one ordered scan of their segments.

    Streaming, one segment held at a time: each latent's count and maximum come first from the segments' own
    columns (no data decoded), so its fine histogram can be filled segment by segment over a known range. The
    numbers are those of a pass over all of a latent's values at once: float16 values summed in float64 are exact
    in any order, and each value's histogram bin does not depend on the others."""
    seq_len = int(store.provenance["seq_len"])
    sizes = {
        latent: (int(n), float(vmax))
        for latent, n, vmax in store.db.execute(
            "select latent, sum(n), max(max_act) from segments where latent >= ? and latent < ? group by latent",
            [int(lo), int(hi)],
        )
    }
    out: list[dict] = []
    current, total, n_windows, last_window = lo, 0.0, 0, -1
    fine = np.zeros(FINE_BINS, np.int64)

    def close_until(latent: int) -> None:  # rows of `current` and of every latent up to `latent` that never fired
        nonlocal current, total, n_windows, last_window, fine
        while current < latent:
            count, vmax = sizes.get(current, (0, 0.0))
            out.append(stats_row(current, count, total, vmax, n_windows, fine, n_tokens))
            current, total, n_windows, last_window = current + 1, 0.0, 0, -1
            fine = np.zeros(FINE_BINS, np.int64)

    for latent, positions, values in store.scan_segments(lo, hi):
        close_until(latent)
        acts = values.astype(np.float32)
        total += float(acts.sum(dtype=np.float64))
        vmax = sizes[latent][1]
        fine += np.histogram(acts, bins=FINE_BINS, range=(0.0, vmax if vmax > 0 else 1.0))[0]
        # Positions ascend, so windows come in order: count the changes, and do not count again a window that
        # the previous segment of this latent ended in.
        windows = window_ids(positions, seq_len, window_len)
        n_windows += 1 + int(np.count_nonzero(windows[1:] != windows[:-1])) - int(windows[0] == last_window)
        last_window = int(windows[-1])
    close_until(hi)
    return out


def stats_row(
    latent: int, count: int, total: float, vmax: float, n_windows: int, fine: np.ndarray, n_tokens: int
) -> dict:
    row = {
        "latent": latent,
        "count": count,
        "frequency": count / max(n_tokens, 1),
        "max_act": vmax,
        "mean_act": total / count if count else 0.0,
        "n_windows": n_windows,
    }
    if count == 0:
        return dict(row, deciles="[]", hist_edges="[]", hist_counts="[]")
    top = vmax if vmax > 0 else 1.0
    fine_edges = np.linspace(0.0, top, FINE_BINS + 1)
    cum = np.cumsum(fine)
    deciles = fine_edges[np.searchsorted(cum, np.arange(1, 10) / 10 * count) + 1]
    coarse = fine.reshape(HIST_BINS, -1).sum(1)
    return dict(
        row,
        deciles=_round(deciles),
        hist_edges=_round(np.linspace(0.0, top, HIST_BINS + 1)),
        hist_counts=json.dumps(coarse.tolist()),
    )


STATS_COLUMNS = (
    "latent",
    "count",
    "frequency",
    "max_act",
    "mean_act",
    "n_windows",
    "deciles",
    "hist_edges",
    "hist_counts",
)
INSERT_STATS = (
    f"insert or replace into latents ({', '.join(STATS_COLUMNS)}) values ({', '.join('?' * len(STATS_COLUMNS))})"
)


def write_stats_rows(store: ActivationStore, rows: list[dict], next_latent: int, fingerprint: str) -> None:
    """Statistics rows and the stage's resume point (done once `next_latent` is the last latent), with no
    transaction of its own: compaction writes them in the transaction of a band's last unit (store/onepass.py)."""
    conn = store.db.conn
    conn.executemany(INSERT_STATS, [tuple(r[c] for c in STATS_COLUMNS) for r in rows])
    done = next_latent >= int(store.provenance["num_latents"])
    store.set_stage(CACHE_STATS, fingerprint, {"next_latent": next_latent}, done)
    if done:  # as write_latent_stats does on the last batch
        pack_stat_columns(conn, fingerprint)


def compute_latent_stats(store: ActivationStore, window_len: int, progress=None, batch: int = 1000) -> int:
    """(Re)compute the statistics row of every latent from what is stored; returns the latents computed.

    Resumable: each batch of rows is committed with the stage's resume point, and the last one marks the stage
    done, so a run killed anywhere inside this pass continues where it stopped and never mistakes a partial
    table for a finished one. Rows are recomputed from scratch when the chunks changed since they were written."""
    compact(store)  # statistics read segments: nothing may still be staged
    fingerprint = store.stats_fingerprint(window_len)
    num_latents = int(store.provenance["num_latents"])
    state = store.stage(CACHE_STATS)
    if state is not None and state["fingerprint"] == fingerprint:
        if state["done_at"] is not None:
            return 0
        start = int(state["detail"].get("next_latent", 0))
    else:
        start = 0
    # Frequency is per counted token: BOS positions are never activations, so not counted.
    n_tokens = store.n_tokens()
    if progress is not None and start:
        progress(start)
    for lo in range(start, num_latents, batch):
        hi = min(lo + batch, num_latents)
        rows = batch_stats(store, lo, hi, window_len, n_tokens)
        store.write_latent_stats(rows, (fingerprint, {"next_latent": hi}, hi == num_latents))
        kill_point(CACHE_STATS)
        if progress is not None:
            progress(hi - lo)
    if num_latents == 0 or start >= num_latents:  # nothing to write: still record the end
        with store.db.conn:
            store.set_stage(CACHE_STATS, fingerprint, {"next_latent": num_latents}, True)
    return num_latents - start
