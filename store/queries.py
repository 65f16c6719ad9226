"""Reading examples back: a latent's activating windows, samples of them, and non-activating windows.

A window is a fixed span of `window_len` tokens aligned inside one cached sequence (sequences
are cut into consecutive windows, the last one possibly shorter). A window activates a latent
when any of its tokens does; its strength is the largest activation inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .db import ActivationStore
from .layout import window_ids


@dataclass
class LatentWindow:
    latent: int
    seq: int  # sequence id
    start: int  # first token position inside the sequence
    tokens: np.ndarray  # token ids, int64
    acts: np.ndarray  # this latent's activation at each token, float32 (0 where it did not fire)
    max_act: float

    @property
    def window_id(self) -> tuple[int, int]:
        return (self.seq, self.start)


@dataclass
class ActivatingWindows:
    """Every activating window of one latent, as arrays (cheap to sample from)."""

    latent: int
    window_ids: np.ndarray  # global window index, sorted ascending
    max_acts: np.ndarray  # strongest activation inside each window
    positions: np.ndarray  # global token positions of all activations, sorted
    values: np.ndarray  # their values


class WindowQueries:
    """Sampling and fetching of windows over one ActivationStore."""

    def __init__(self, store: ActivationStore, window_len: int = 32):
        prov = store.provenance
        if prov is None:
            raise ValueError("the database holds no activation cache yet")
        self.store = store
        self.seq_len = int(prov["seq_len"])
        self.window_len = min(int(window_len), self.seq_len)
        self.windows_per_seq = -(-self.seq_len // self.window_len)

    # ---- window arithmetic ----------------------------------------------------------------

    def window_of(self, positions: np.ndarray) -> np.ndarray:
        return window_ids(positions, self.seq_len, self.window_len)

    def n_windows(self) -> int:
        return self.store.n_sequences() * self.windows_per_seq

    # ---- activating windows ---------------------------------------------------------------

    def activating(self, latent: int) -> ActivatingWindows:
        positions, values = self.store.latent_activations(latent)
        win = self.window_of(positions)
        ids, first = np.unique(win, return_index=True)
        maxes = np.maximum.reduceat(values, first) if len(values) else np.zeros(0, np.float32)
        return ActivatingWindows(latent, ids, maxes, positions, values)

    def fetch(self, aw: ActivatingWindows, window_ids) -> list[LatentWindow]:
        """Build LatentWindows (tokens + per-token activations) for the given global window ids."""
        window_ids = [int(w) for w in window_ids]
        seqs = self.store.sequences(w // self.windows_per_seq for w in window_ids)
        out = []
        for w in window_ids:
            seq, k = divmod(w, self.windows_per_seq)
            start = k * self.window_len
            tokens = seqs[seq][start : start + self.window_len].astype(np.int64)
            acts = np.zeros(len(tokens), np.float32)
            g0 = seq * self.seq_len + start
            lo, hi = np.searchsorted(aw.positions, [g0, g0 + len(tokens)])
            acts[aw.positions[lo:hi] - g0] = aw.values[lo:hi]
            out.append(LatentWindow(aw.latent, seq, start, tokens, acts, float(acts.max(initial=0))))
        return out

    # ---- samples ---------------------------------------------------------------------------

    def top(self, aw: ActivatingWindows, n: int, exclude=()) -> np.ndarray:
        order = np.argsort(-aw.max_acts, kind="stable")
        ids = aw.window_ids[order]
        if len(exclude):
            ids = ids[~np.isin(ids, np.asarray(list(exclude)))]
        return ids[:n]

    def random(self, aw: ActivatingWindows, n: int, rng: np.random.Generator, exclude=()) -> np.ndarray:
        ids = aw.window_ids
        if len(exclude):
            ids = ids[~np.isin(ids, np.asarray(list(exclude)))]
        return rng.choice(ids, size=min(n, len(ids)), replace=False) if len(ids) else ids

    def decile_bins(self, aw: ActivatingWindows, n_bins: int = 10) -> list[np.ndarray]:
        """Activating windows split into `n_bins` equal-count bins by strength, weakest first."""
        order = np.argsort(aw.max_acts, kind="stable")
        return [aw.window_ids[part] for part in np.array_split(order, n_bins)]

    def stratified(
        self, aw: ActivatingWindows, per_bin: int, rng: np.random.Generator, n_bins: int = 10, exclude=()
    ) -> list[np.ndarray]:
        """`per_bin` random windows from each strength bin (fewer where a bin is smaller)."""
        excl = np.asarray(list(exclude)) if len(exclude) else None
        out = []
        for ids in self.decile_bins(aw, n_bins):
            if excl is not None:
                ids = ids[~np.isin(ids, excl)]
            out.append(rng.choice(ids, size=min(per_bin, len(ids)), replace=False) if len(ids) else ids)
        return out

    def non_activating(self, aw: ActivatingWindows, n: int, rng: np.random.Generator, exclude=()) -> np.ndarray:
        """`min(n, available)` random windows in which the latent never fires, exactly: rejection sampling,
        which is quick unless the latent fires almost everywhere; then a draw from the complement."""
        total = self.n_windows()
        taken = set(int(w) for w in aw.window_ids) | {int(w) for w in exclude}
        available = total - len(taken)
        n = min(n, max(available, 0))
        chosen: list[int] = []
        seen: set[int] = set()
        for _ in range(50):
            if len(chosen) >= n:
                break
            for w in rng.integers(0, total, size=2 * (n - len(chosen)) + 8):
                w = int(w)
                if w not in taken and w not in seen:
                    seen.add(w)
                    chosen.append(w)
                    if len(chosen) >= n:
                        break
        if len(chosen) < n:  # a dense latent: draw the rest from every window left (memory: one int per window)
            rest = np.setdiff1d(
                np.arange(total, dtype=np.int64), np.fromiter(taken | seen, np.int64), assume_unique=True
            )
            chosen += [int(w) for w in rng.choice(rest, size=n - len(chosen), replace=False)]
        return np.asarray(chosen, dtype=np.int64)

    def histogram(self, latent: int) -> tuple[list[float], list[int]] | None:
        stats = self.store.latent_stats(latent)
        if stats is None:
            return None
        return stats["hist_edges"], stats["hist_counts"]
