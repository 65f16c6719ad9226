"""Which windows each latent shows the explainer and the scorers: seeded, disjoint by construction.

The explainer's windows are drawn first; the scorers' activating windows (a fixed number from each
strength decile) and non-activating windows are drawn from what is left. The draw depends only on
(seed, latent), so it is reproduced exactly on rerun, and the store's primary key (latent, window)
rejects any window that would land in two roles.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np

from autointerp.engine.config import SampleConfig
from autointerp.store.queries import ActivatingWindows, WindowQueries
from autointerp.store.results import SampleSet

TOP_POOL = 200  # "mix" draws half its examples from the strongest 200 windows (as in the seeds)
CONTRASTIVE_NEGATIVES = 10  # hard negatives shown to the contrastive explainer


@dataclass
class NegativeSources:
    """How to find non-activating windows beyond random ones (each optional; see SampleConfig)."""

    neighbours: Callable[[int], list[int]] | None = None  # latent -> latents with similar decoder direction
    coactivating: Callable[[int], list[int]] | None = None  # latent -> latents that fire in the same windows
    # (candidate windows, reference windows) -> candidates ordered most similar first
    by_embedding: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _split_sizes(n: int, parts: int) -> list[int]:
    """Sizes of np.array_split(range(n), parts)."""
    q, r = divmod(n, parts)
    return [q + 1] * r + [q] * (parts - r)


def sample_sizes(
    cfg: SampleConfig, n_windows: int, total_windows: int, explainer_negatives: bool = False
) -> dict | None:
    """How many windows `ExampleSampler.draw` puts in each role for a latent with `n_windows` activating windows
    out of `total_windows`, without drawing (None: the latent is skipped). Kept in step with `draw`, which a test
    checks; the dry run counts LLM calls with it."""
    if n_windows < cfg.min_windows:
        return None
    k = min(cfg.n_explain, n_windows // 2)
    if cfg.explain_strategy == "stratified":
        per_bin = -(-k // cfg.n_deciles)
        n_explain = min(k, sum(min(per_bin, size) for size in _split_sizes(n_windows, cfg.n_deciles)))
    else:
        n_explain = k
    held_out = _split_sizes(n_windows - n_explain, cfg.n_deciles)
    n_activating = sum(min(cfg.activating_per_decile, size) for size in held_out)
    silent = total_windows - n_windows
    explain_non = min(CONTRASTIVE_NEGATIVES, silent) if explainer_negatives else 0
    return {
        "explain": n_explain,
        "activating": n_activating,
        "explain_non": explain_non,
        "non_activating": min(cfg.n_non_activating, silent - explain_non),
    }


class ExampleSampler:
    def __init__(
        self,
        queries: WindowQueries,
        cfg: SampleConfig,
        sources: NegativeSources | None = None,
        explainer_negatives: bool = False,
    ):
        if cfg.n_explain is None:
            raise ValueError("resolve the config's profile first (config.resolve_profile)")
        self.q, self.cfg = queries, cfg
        self.sources = sources or NegativeSources()
        self.explainer_negatives = explainer_negatives

    def draw(self, latent: int) -> SampleSet:
        cfg, q = self.cfg, self.q
        rng = np.random.default_rng([cfg.seed, latent])
        aw = q.activating(latent)
        n = len(aw.window_ids)
        s = SampleSet(latent, cfg.seed, n, dataclasses.asdict(cfg))
        if n < cfg.min_windows:
            s.skipped = f"{n} activating windows (fewer than min_windows = {cfg.min_windows})"
            return s
        # The explainer never takes more than half, so the scorers always keep held-out windows.
        explain = self._explain_windows(aw, min(cfg.n_explain, n // 2), rng)
        decile = {int(w): d + 1 for d, ids in enumerate(q.decile_bins(aw, cfg.n_deciles)) for w in ids}
        s.windows["explain"] = [(int(w), decile[int(w)], cfg.explain_strategy) for w in explain]
        # The scorers' deciles are those of the held-out windows: binning all windows and then removing the
        # explainer's would leave the strongest decile short whenever the explainer took the top windows.
        held = ~np.isin(aw.window_ids, explain)
        held_out = ActivatingWindows(latent, aw.window_ids[held], aw.max_acts[held], aw.positions, aw.values)
        bins = q.stratified(held_out, cfg.activating_per_decile, rng, cfg.n_deciles)
        s.windows["activating"] = [(int(w), d + 1, "stratified") for d, ids in enumerate(bins) for w in ids]
        taken = np.array([w for items in s.windows.values() for w, _, _ in items], dtype=np.int64)
        if self.explainer_negatives:
            negs = self._negatives(aw, CONTRASTIVE_NEGATIVES, rng, explain, taken)
            s.windows["explain_non"] = negs
            taken = np.concatenate([taken, [w for w, _, _ in negs]]).astype(np.int64)
        s.windows["non_activating"] = self._negatives(aw, cfg.n_non_activating, rng, explain, taken)
        return s

    # ---- explainer windows ---------------------------------------------------------------------

    def _explain_windows(self, aw: ActivatingWindows, k: int, rng) -> np.ndarray:
        q, strategy = self.q, self.cfg.explain_strategy
        if strategy == "top":
            return q.top(aw, k)
        if strategy == "random":
            return q.random(aw, k, rng)
        if strategy == "stratified":
            per_bin = -(-k // self.cfg.n_deciles)
            ids = np.concatenate(q.stratified(aw, per_bin, rng, self.cfg.n_deciles))
            return rng.choice(ids, size=min(k, len(ids)), replace=False)
        # mix: half from the strongest TOP_POOL windows, half from all the others
        pool = q.top(aw, TOP_POOL)
        top = rng.choice(pool, size=min(k // 2, len(pool)), replace=False)
        return np.concatenate([top, q.random(aw, k - len(top), rng, exclude=top)])

    # ---- non-activating windows ----------------------------------------------------------------

    def _negatives(self, aw, n: int, rng, explain: np.ndarray, taken: np.ndarray) -> list[tuple[int, int, str]]:
        source = self.cfg.non_activating_source
        chosen: list[tuple[int, int, str]] = []
        if source in ("neighbours", "coactivation"):
            finder = self.sources.neighbours if source == "neighbours" else self.sources.coactivating
            if finder is None:
                raise ValueError(f"non_activating_source {source!r} is not available for this store")
            cands = [self.q.activating(other).window_ids for other in finder(aw.latent)]
            pool = np.unique(np.concatenate(cands)) if cands else np.zeros(0, np.int64)
            pool = pool[~np.isin(pool, aw.window_ids) & ~np.isin(pool, taken)]
            picked = rng.choice(pool, size=min(n, len(pool)), replace=False) if len(pool) else pool
            chosen = [(int(w), 0, source) for w in picked]
        elif source == "embedding":
            if self.sources.by_embedding is None:
                raise ValueError("non_activating_source 'embedding' needs an embedding model")
            pool = self.q.non_activating(aw, max(10 * n, 200), rng, exclude=taken)
            ranked = self.sources.by_embedding(pool, explain)
            chosen = [(int(w), 0, "embedding") for w in ranked[:n]]
        # Random windows make up any shortfall (and are the whole draw for "random"); recorded as such.
        if len(chosen) < n:
            exclude = np.concatenate([taken, [w for w, _, _ in chosen]]).astype(np.int64)
            chosen += [(int(w), 0, "random") for w in self.q.non_activating(aw, n - len(chosen), rng, exclude=exclude)]
        return chosen
