"""Latents related to a latent: by decoder direction (cosine) or by firing in the same windows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.store.queries import WindowQueries
from autointerp.store.sketches import EMPTY, load_sketches

# At or below this many latents, and on a GPU, the neighbours are exact (all pairs, in blocks): at 32,768 x 576
# that is ~15 s on 2 CPU cores, and the index no faster. Above it, on a CPU, a graph index finds them (README
# "Scale": 92 s instead of 208 s at 131,072 x 576, growing as latents^~1.2-1.5 instead of latents^1.9). IVF lists
# (fixed list size, HNSW or flat coarse quantizer) and NN-descent grow less but lose recall as latents grow on a
# decoder of many near-orthogonal families (0.91 and 0.85 at 131k; README "Scale"): the graph stays.
ANN_ABOVE = 32_768


@dataclass(frozen=True)
class IndexSettings:
    """The approximate index of the decoder neighbours: faiss's HNSW graph over the unit-normalised decoder rows
    (inner product = cosine), rows stored as float16 (half the memory of a float32 copy: 4.7 GB at 1M x 2304).

    The graph is built on one thread (faiss inserts in parallel under locks, whose order nothing fixes; one
    thread gives the same graph, and so the same rows, every time: faiss draws the levels from its own fixed
    seed; two threads gave no shorter build on 2 busy cores), then searched on torch's threads (each search alone
    is deterministic). Each latent asks the graph for `candidates` rows (itself included), whose exact cosines are
    computed from the float32 decoder; the best k of them are kept."""

    m: int = 24
    ef_construction: int = 60
    ef_search: int = 32
    candidates: int = 21
    build_threads: int = 1

    def describe(self) -> dict:
        return {"method": "faiss.IndexHNSWSQ", "faiss": _faiss_version(), "storage": "fp16"} | dataclasses.asdict(self)


def _faiss_version() -> str:
    import faiss

    return faiss.__version__


class DecoderNeighbours:
    """Latents whose decoder directions are closest in cosine similarity.

    Holds the decoder it is given (no copy when it is already float32 on the device: the coder's own tensor, shared
    with the logit lens) and the inverse norms of its rows, never a normalised copy. A batch's cosines are made in
    blocks of `block` latents with a running top k, so memory is [batch, block] at any width (the full [batch,
    latents] matrix was 2 GB for 512 latents at 1M).

    With `approximate_above` set (the annotate stage's ANN_ABOVE), a decoder with more latents than that on a CPU
    is searched through an HNSW index (`IndexSettings`, built on the first query) instead: all pairs cost latents^2
    x d (5 h at 1M x 576 on 2 cores). The values are still the exact cosines of the pairs returned; only a true
    neighbour the graph misses can be absent (recall@10 0.995 on a clustered 131k decoder, README "Scale")."""

    def __init__(
        self,
        decoder: torch.Tensor,
        k: int = 10,
        device: str | torch.device = "cpu",
        block: int = 32768,
        approximate_above: int | None = None,
        settings: IndexSettings | None = None,
    ):
        self.w = decoder.detach().float().to(device)
        self.inv_norm = 1.0 / self.w.norm(dim=1).clamp_min(1e-12)
        self.k, self.block = k, block
        n = self.w.shape[0]
        self.approximate = approximate_above is not None and n > approximate_above and self.w.device.type == "cpu"
        self.settings = settings or IndexSettings()
        self._index = None

    def describe(self) -> dict:
        """How the neighbours are found (recorded with the annotate stage's event)."""
        if self.approximate:
            return {"exact": False, "k": self.k} | self.settings.describe()
        return {"exact": True, "k": self.k, "method": "all pairs, blocked", "device": self.w.device.type}

    def similar(self, latent: int) -> list[tuple[int, float]]:
        vals, idx = self.nearest(torch.tensor([latent]))
        return [(int(i), float(v)) for i, v in zip(idx[0], vals[0])]

    def nearest(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For a batch of latents: (values, indices) [len(latents), k] of the cosine to every other latent, self
        excluded, descending."""
        latents = latents.to(self.w.device)
        if self.approximate:
            return self._approximate(latents)
        return self._exact(latents)

    def _exact(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def index(self):
        """The HNSW index of the normalised rows, built once: rows are normalised and added a block at a time, so
        no float32 normalised copy of the whole decoder is ever held."""
        if self._index is None:
            import faiss

            s, (n, d) = self.settings, self.w.shape
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, s.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.ef_construction
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(s.build_threads)
            try:
                for start in range(0, n, self.block):
                    end = min(start + self.block, n)
                    rows = (self.w[start:end] * self.inv_norm[start:end, None]).numpy()
                    if not index.is_trained:
                        index.train(rows)  # float16 storage: nothing is learned, faiss only asks for the call
                    index.add(rows)
            finally:
                faiss.omp_set_num_threads(before)
            index.hnsw.efSearch = max(s.ef_search, s.candidates)
            self._index = index
        return self._index

    def _approximate(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import faiss

        index, k = self.index(), min(self.k, self.w.shape[0] - 1)
        q = self.w[latents] * self.inv_norm[latents, None]
        # Every query is a row of the index: its search starts at that row, on the graph's bottom level, instead of
        # descending from the top (the descent lands in the wrong family of directions often enough to cost ~8
        # points of recall at 131k; README "Scale").
        n_q, c = len(latents), self.settings.candidates
        rows = np.ascontiguousarray(q.numpy())
        entry = latents.numpy().astype(np.int32).reshape(n_q, 1)
        entry_d = np.ones((n_q, 1), np.float32)
        found, dist = np.full((n_q, c), -1, np.int64), np.empty((n_q, c), np.float32)
        ptr = faiss.swig_ptr
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(torch.get_num_threads())
        try:
            index.search_level_0(n_q, ptr(rows), c, ptr(entry), ptr(entry_d), ptr(dist), ptr(found), 1, 1)
        finally:
            faiss.omp_set_num_threads(before)
        cand = torch.from_numpy(found).long()
        bad = (cand < 0) | (cand == latents[:, None])  # padding (fewer found) and the latent itself
        cand = cand.clamp_min(0)
        # The exact cosines of the candidates, from the float32 decoder: what an exhaustive search would store.
        sims = torch.einsum("bd,bcd->bc", q, self.w[cand]) * self.inv_norm[cand]
        sims[bad] = -3.0  # below any cosine and below the exact path's own mark
        if sims.shape[1] < k:  # fewer candidates asked than k: the missing ones read as not found
            sims = torch.cat([sims, sims.new_full((len(sims), k - sims.shape[1]), -3.0)], dim=1)
            cand = torch.cat([cand, cand.new_zeros((len(cand), k - cand.shape[1]))], dim=1)
        values, order = sims.topk(k, dim=1)
        indices = cand.gather(1, order)
        short = (values < -2.0).any(dim=1)  # a latent the graph gave fewer than k others for: search it exactly
        if short.any():
            values[short], indices[short] = self._exact(latents[short])
        return values, indices

    def __call__(self, latent: int) -> list[int]:
        return [i for i, _ in self.similar(latent)]


class CoactivationIndex:
    """Latents that fire in the same windows, ranked by Jaccard similarity of their window sets.

    Memory is bounded at any width and length. Each latent has a one-permutation MinHash sketch of its window set
    (store/sketches.py: 64 uint32 per latent, 33 MB at 131k latents, 256 MB at 1M, the same at any token count),
    made by compaction and stored once, so the index reads them instead of decoding every segment. A query ranks every latent by its sketch estimate of the Jaccard similarity,
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
        if self._sig is None:  # stored by compaction (or built once and stored: store/sketches.py)
            self._sig = load_sketches(self.q.store, self.q.window_len)
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
            filled = s != EMPTY
            match = ((sig == s) & filled).sum(axis=1)
            either = (filled | (sig != EMPTY)).sum(axis=1)
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
