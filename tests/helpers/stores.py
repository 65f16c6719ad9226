"""Stores made by the real store code from synthetic activations, for tests that need no model."""

from __future__ import annotations

import numpy as np

from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.synthetic import synthetic_provenance


def base_provenance(**over) -> dict:
    """A small synthetic cache's provenance (store/synthetic.py, the one builder): 8 latents of width 4, two chunks of
    two 16-token sequences, start token 1, default cache config; `over` sets any field."""
    sizes = {
        "num_latents": 8,
        "d_in": 4,
        "seq_len": 16,
        "n_tokens_target": 64,
        "chunk_seqs": 2,
        "vocab_size": 100,
        "bos_token_id": 1,
        "config": {},
    }
    return synthetic_provenance(**{**sizes, **over})


def fill_store(path, n_chunks=2, seed=0, **prov_over) -> tuple[ActivationStore, dict]:
    """A store with random activations; returns it and the dense truth {(latent, global_pos): value}."""
    prov = base_provenance(**prov_over)
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    rng = np.random.default_rng(seed)
    seq_len, per_chunk, m = prov["seq_len"], prov["chunk_seqs"], prov["num_latents"]
    truth = {}
    for c in range(n_chunks):
        seqs = rng.integers(2, prov["vocab_size"], size=(per_chunk, seq_len))
        seqs[:, 0] = prov["bos_token_id"]
        lat, off, val = [], [], []
        for o in range(per_chunk * seq_len):
            if o % seq_len == 0:
                continue  # BOS: never an activation
            for latent in rng.choice(m, size=2, replace=False):
                v = np.float16(rng.uniform(0.1, 5.0))
                lat.append(latent), off.append(o), val.append(v)
                truth[(int(latent), c * per_chunk * seq_len + o)] = float(v)
        store.write_chunk(
            ChunkInfo(c, c * per_chunk, per_chunk, per_chunk * (seq_len - 1), len(val)),
            seqs,
            np.array(lat, np.int32),
            np.array(off, np.uint16),
            np.array(val, np.float16),
            0.0,
        )
    return store, truth
