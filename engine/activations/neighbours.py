"""Latents related to a latent: by decoder direction (cosine) or by firing in the same windows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from autointerp.store.queries import WindowQueries


class DecoderNeighbours:
    """Latents whose decoder directions are closest in cosine similarity."""

    def __init__(self, decoder: torch.Tensor, k: int = 10, device: str | torch.device = "cpu"):
        w = decoder.detach().float().to(device)
        self.w = torch.nn.functional.normalize(w, dim=1)
        self.k = k

    def similar(self, latent: int) -> list[tuple[int, float]]:
        sims = self.w @ self.w[latent]
        sims[latent] = -2.0
        vals, idx = sims.topk(min(self.k, len(sims) - 1))
        return [(int(i), float(v)) for i, v in zip(idx, vals)]

    def nearest(self, latents: torch.Tensor):
        """For a batch of latents: torch.topk (values, indices) [len(latents), k] of the cosine to every
        other latent, self excluded, descending. Builds only [len(latents), num_latents]."""
        latents = latents.to(self.w.device)
        sims = self.w[latents] @ self.w.T
        sims[torch.arange(len(latents), device=sims.device), latents] = -2.0  # below any cosine
        return sims.topk(min(self.k, sims.shape[1] - 1), dim=1)

    def __call__(self, latent: int) -> list[int]:
        return [i for i, _ in self.similar(latent)]


class CoactivationIndex:
    """Latents that fire in the same windows, ranked by Jaccard similarity of their window sets.

    Built once, on first use, as a sparse latents x windows incidence matrix (one pass over the store;
    4 bytes per (latent, window) pair in memory).
    """

    def __init__(self, queries: WindowQueries, num_latents: int, k: int = 10):
        self.q, self.num_latents, self.k = queries, num_latents, k
        self._m: sp.csr_matrix | None = None

    def _matrix(self) -> sp.csr_matrix:
        if self._m is None:
            rows, cols = [], []
            for latent in range(self.num_latents):
                ids = self.q.activating(latent).window_ids
                rows.append(np.full(len(ids), latent, np.int32))
                cols.append(ids.astype(np.int32))
            r, c = np.concatenate(rows), np.concatenate(cols)
            self._m = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(self.num_latents, self.q.n_windows()))
        return self._m

    def similar(self, latent: int) -> list[tuple[int, float]]:
        m = self._matrix()
        shared = np.asarray((m @ m[latent].T).todense()).ravel()
        sizes = np.asarray(m.sum(axis=1)).ravel()
        union = sizes + sizes[latent] - shared
        jac = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
        jac[latent] = -1.0
        order = np.argsort(-jac, kind="stable")[: self.k]
        return [(int(i), float(jac[i])) for i in order if jac[i] > 0]

    def __call__(self, latent: int) -> list[int]:
        return [i for i, _ in self.similar(latent)]
