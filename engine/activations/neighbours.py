"""Latents related to a latent: by decoder direction (cosine) or by firing in the same windows."""

from __future__ import annotations

import numpy as np
import torch

from autointerp.store.queries import WindowQueries


class DecoderNeighbours:
    """Latents whose decoder directions are closest in cosine similarity.

    Holds the decoder it is given (no copy when it is already float32 on the device: the coder's own tensor, shared
    with the logit lens) and the inverse norms of its rows, never a normalised copy. A batch's cosines are made in
    blocks of `block` latents with a running top k, so memory is [batch, block] at any width (the full [batch,
    latents] matrix was 2 GB for 512 latents at 1M)."""

    def __init__(self, decoder: torch.Tensor, k: int = 10, device: str | torch.device = "cpu", block: int = 32768):
        self.w = decoder.detach().float().to(device)
        self.inv_norm = 1.0 / self.w.norm(dim=1).clamp_min(1e-12)
        self.k, self.block = k, block

    def similar(self, latent: int) -> list[tuple[int, float]]:
        vals, idx = self.nearest(torch.tensor([latent]))
        return [(int(i), float(v)) for i, v in zip(idx[0], vals[0])]

    def nearest(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a batch of latents: (values, indices) [len(latents), k] of the cosine to every other latent, self
        excluded, descending."""
        latents = latents.to(self.w.device)
        n = self.w.shape[0]
        k = min(self.k, n - 1)
        q = self.w[latents] * self.inv_norm[latents, None]
        rows = torch.arange(len(latents), device=q.device)
        best_v = torch.empty((len(latents), 0), device=q.device)
        best_i = torch.empty((len(latents), 0), dtype=torch.long, device=q.device)
        for start in range(0, n, self.block):
            end = min(start + self.block, n)
            sims = (q @ self.w[start:end].T) * self.inv_norm[start:end]
            own = (latents >= start) & (latents < end)
            sims[rows[own], latents[own] - start] = -2.0  # below any cosine
            v, i = sims.topk(min(k, end - start), dim=1)
            best_v, order = torch.cat([best_v, v], dim=1).topk(min(k, best_v.shape[1] + v.shape[1]), dim=1)
            best_i = torch.cat([best_i, i + start], dim=1).gather(1, order)
        return best_v, best_i

    def __call__(self, latent: int) -> list[int]:
        return [i for i, _ in self.similar(latent)]


SKETCH_BUCKETS = 64
_EMPTY = np.uint32(0xFFFFFFFF)


def _mix(w: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-mixed 64-bit hash of each window id (numpy wraps uint64 products)."""
    x = w.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class CoactivationIndex:
    """Latents that fire in the same windows, ranked by Jaccard similarity of their window sets.

    Memory is bounded at any width and length. One streaming pass over the stored segments makes a one-permutation
    MinHash sketch of each latent's window set (SKETCH_BUCKETS uint32 per latent: 33 MB at 131k latents, 256 MB at
    1M, the same at any token count). A query ranks every latent by its sketch estimate of the Jaccard similarity,
    then computes the exact similarity of the best `candidates` from their stored windows; the answer is those
    exact values, in the order an exhaustive search gives whenever the true top k are among the candidates (always
    when the store has no more latents than candidates). The old index held a latents x windows matrix: 1.6 GB at
    16k latents x 1M tokens, ~36 GB at 1M x 100M.
    """

    def __init__(self, queries: WindowQueries, num_latents: int, k: int = 10, candidates: int | None = None):
        self.q, self.num_latents, self.k = queries, num_latents, k
        self.candidates = candidates or max(10 * k, 100)
        self._sig: np.ndarray | None = None

    def _sketches(self) -> np.ndarray:
        if self._sig is None:
            sig = np.full((self.num_latents, SKETCH_BUCKETS), _EMPTY, np.uint32)
            shift = np.uint64(64 - int(np.log2(SKETCH_BUCKETS)))
            for latent, positions, _ in self.q.store.scan_segments(0, self.num_latents):
                w = self.q.window_of(positions)
                w = w[np.r_[True, w[1:] != w[:-1]]]  # positions ascend: drop repeats without a sort
                h = _mix(w)
                low = np.minimum(h & np.uint64(0xFFFFFFFF), np.uint64(0xFFFFFFFE)).astype(np.uint32)
                np.minimum.at(sig[latent], (h >> shift).astype(np.intp), low)
            self._sig = sig
        return self._sig

    def _windows(self, latent: int) -> np.ndarray:
        return self.q.activating(latent).window_ids

    def similar(self, latent: int) -> list[tuple[int, float]]:
        mine = self._windows(latent)
        if not len(mine):
            return []
        if self.num_latents <= self.candidates + 1:
            pool = np.array([i for i in range(self.num_latents) if i != latent], np.int64)
        else:
            sig = self._sketches()
            s = sig[latent]
            filled = s != _EMPTY
            match = ((sig == s) & filled).sum(axis=1)
            either = (filled | (sig != _EMPTY)).sum(axis=1)
            est = match / np.maximum(either, 1)
            est[latent] = -1.0
            pool = np.argpartition(-est, self.candidates)[: self.candidates]
            pool = pool[est[pool] > 0]
        sims = []
        for other in pool.tolist():
            theirs = self._windows(other)
            shared = len(np.intersect1d(mine, theirs, assume_unique=True))
            if shared:
                sims.append((-shared / (len(mine) + len(theirs) - shared), other))
        sims.sort()  # by similarity, descending, then by latent id, as a stable exhaustive ranking orders ties
        return [(other, -negative) for negative, other in sims[: self.k]]

    def __call__(self, latent: int) -> list[int]:
        return [i for i, _ in self.similar(latent)]
