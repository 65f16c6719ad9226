"""Per-latent statistics computed from the stored activations (count, frequency, max, deciles, histogram)."""

from __future__ import annotations

import json

import numpy as np

from .db import ActivationStore

HIST_BINS = 20


def latent_stats_row(latent: int, values: np.ndarray, n_windows: int, n_tokens: int) -> dict:
    if len(values) == 0:
        return {
            "latent": latent, "count": 0, "frequency": 0.0, "max_act": 0.0, "mean_act": 0.0,
            "n_windows": 0, "deciles": "[]", "hist_edges": "[]", "hist_counts": "[]",
        }  # fmt: skip
    vmax = float(values.max())
    counts, edges = np.histogram(values, bins=HIST_BINS, range=(0.0, vmax if vmax > 0 else 1.0))
    return {
        "latent": latent,
        "count": int(len(values)),
        "frequency": len(values) / max(n_tokens, 1),
        "max_act": vmax,
        "mean_act": float(values.mean()),
        "n_windows": int(n_windows),
        "deciles": json.dumps([round(float(q), 5) for q in np.quantile(values, np.arange(1, 10) / 10)]),
        "hist_edges": json.dumps([round(float(e), 5) for e in edges]),
        "hist_counts": json.dumps(counts.tolist()),
    }


def compute_latent_stats(store: ActivationStore, window_len: int, progress=None) -> int:
    """(Re)compute the statistics row of every latent from what is stored; returns latents seen.

    Reads one latent at a time, so memory stays bounded by the densest latent.
    """
    from .queries import WindowQueries

    q = WindowQueries(store, window_len)
    prov = store.provenance
    # Frequency is per counted token: BOS positions are never activations, so not counted.
    n_tokens = store.n_tokens()
    rows = []
    for latent in range(int(prov["num_latents"])):
        aw = q.activating(latent)
        rows.append(latent_stats_row(latent, aw.values, len(aw.window_ids), n_tokens))
        if len(rows) >= 1000:
            store.write_latent_stats(rows)
            rows = []
        if progress is not None:
            progress(1)
    if rows:
        store.write_latent_stats(rows)
    return int(prov["num_latents"])
