"""Latents a known heuristic explains before any LLM is paid: positional and (candidate) unigram latents.

Positional: how much the token position says about whether the latent fires (Voita et al. 2023 keep neurons with
I(act, pos) > 0.05). Here Y is the binary "the latent fires at this token" and X the position within the sequence,
1..seq_len-1 (position 0 is the start token, never an activation), every position equally frequent (each cached
sequence is full length). The stored `positional_mi` is the mutual information I(X;Y) adjusted for chance and
normalised, as adjusted mutual information is:

    (I - E0[I]) / (H(Y) - E0[I])  =  1 - H(Y|X) / E0[H(Y|X)]

where H(Y|X) is the plug-in conditional entropy (the mean over positions of the binary entropy of the latent's
firing rate there) and E0 its expectation were the latent's firings independent of position (per position, the
count Binomial(n_sequences, frequency)). Why not the raw MI in bits: for a sparse latent H(Y) itself is tiny
(a latent firing at exactly one position of 256 has H(Y) = 0.037 bits), so no fixed threshold on bits works across
frequencies. Why not MI / H(Y) alone: the plug-in estimate is biased upwards for rare latents (10 activations at
random positions already give MI / H(Y) ~ 0.3), and subtracting its value under independence removes that bias.
The result is 1 for a latent that fires at one position and nowhere else, ~0 for one that ignores position
(clipped at 0), comparable across frequencies; `positional` = positional_mi >= the threshold (0.05 by default).

Unigram candidates (the seeds' heuristic): the tokens at the latent's strongest activations, the top
`top_fraction` of them by value (at or above its (1 - top_fraction) quantile, exact over the float16 values;
ties at the boundary are kept), number at most `max_tokens` distinct ids, among at least `min_activations` such
activations (fewer say nothing: a latent that fired 15 times has at most 15 distinct tokens; without this floor
half the latents of a small cache are candidates, each costing forward passes to verify). Candidates keep those tokens with
their counts; engine/activations/filters.py then verifies them with the subject model (`unigram_fire`,
`unigram`), since a latent can fire on few tokens and still depend on context.

Streaming: one ordered scan of a batch of latents' segments per pass (two passes: the first counts positions and
values, the second reads tokens at or above each latent's quantile), one segment decoded at a time; per latent a
position histogram (seq_len) and a value histogram (65,536 float16 keys), never a latents x positions matrix.
The cache's token ids are held once (2 bytes a token for vocabularies under 65,536). Each batch of rows commits
with the stage's resume point (stage "cache.filters"), so a killed pass resumes, and a changed setting or a changed
cache recomputes. The cache stage computes the same rows, for its own settings, inside compaction
(store/onepass.py); this pass is for a file compacted before that and for settings changed later.
"""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass

import numpy as np

from .db import ActivationStore
from .killpoints import kill_point
from .stages import CACHE_FILTERS, CACHE_UNIGRAM

FILTERS_STAGE = CACHE_FILTERS
UNIGRAM_STAGE = CACHE_UNIGRAM
EXCLUSIONS = ("positional", "unigram")  # what a selection can exclude (`live,-positional,-unigram`)


@dataclass(frozen=True)
class FilterSettings:
    """The filters' knobs (config [cache]; see engine/config.py for what each means)."""

    positional_mi_threshold: float = 0.05
    unigram_max_tokens: int = 20
    unigram_top_fraction: float = 0.8
    unigram_trials_per_token: int = 2
    unigram_context: int = 19
    unigram_min_fire_fraction: float = 0.9
    unigram_min_activations: int = 40

    @classmethod
    def of(cls, cfg) -> FilterSettings:
        """From any object with the same attribute names (a CacheConfig), defaults where it has none."""
        return cls(**{k: getattr(cfg, k, v) for k, v in cls().__dict__.items()})

    def filters_fingerprint(self, store: ActivationStore) -> str:
        return (
            f"{store.chunk_fingerprint()};mi>={self.positional_mi_threshold};"
            f"unigram<={self.unigram_max_tokens} in top {self.unigram_top_fraction} of >={self.unigram_min_activations}"
        )

    def unigram_fingerprint(self, store: ActivationStore) -> str:
        return f"{self.filters_fingerprint(store)};verify={astuple(self)[3:6]}"


# ---- positional ---------------------------------------------------------------------------------------------


def _hb(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits, elementwise (0 at p = 0 and p = 1)."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    out = np.zeros_like(p)
    mid = (p > 0) & (p < 1)
    q = p[mid]
    out[mid] = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return out


def positional_mi(position_counts: np.ndarray, n_sequences: int) -> float:
    """Chance-adjusted normalised MI between firing and position (module docstring) from the counts of firings at
    positions 1..seq_len-1 over `n_sequences` full-length sequences."""
    counts = np.asarray(position_counts, np.float64)
    n, cells = counts.sum(), len(counts)
    if n == 0 or n_sequences == 0 or n >= cells * n_sequences:
        return 0.0  # never fires, or fires everywhere: position says nothing
    # The binomial pmf from log-gamma (a ufunc): scipy.stats.binom.pmf costs ~2 ms a call in its distribution
    # machinery, which at a million latents is half an hour. Imported here: selections import this module.
    from scipy.special import gammaln

    observed = float(_hb(counts / n_sequences).mean())
    rate = n / (cells * n_sequences)
    mean, sd = n_sequences * rate, np.sqrt(n_sequences * rate * (1 - rate))
    k = np.arange(max(0, int(mean - 12 * sd) - 2), min(n_sequences, int(mean + 12 * sd) + 3) + 1)  # all but ~1e-30
    log_pmf = (
        gammaln(n_sequences + 1)
        - gammaln(k + 1)
        - gammaln(n_sequences - k + 1)
        + k * np.log(rate)
        + (n_sequences - k) * np.log1p(-rate)
    )
    expected = float((np.exp(log_pmf) * _hb(k / n_sequences)).sum())
    if expected <= 0:
        return 0.0
    return float(min(max(1.0 - observed / expected, 0.0), 1.0))


# ---- unigram candidates -------------------------------------------------------------------------------------


def order_keys(values: np.ndarray) -> np.ndarray:
    """float16 values as uint16 keys in the same order (sign-magnitude to two's-order), for an exact histogram."""
    bits = np.ascontiguousarray(values, np.float16).view(np.uint16).astype(np.int64)
    return np.where(bits & 0x8000, 0xFFFF - bits, bits | 0x8000)


def key_values(keys: np.ndarray) -> np.ndarray:
    """The float32 values of `order_keys`' keys (its inverse)."""
    keys = np.asarray(keys, np.int64)
    bits = np.where(keys & 0x8000, keys & 0x7FFF, 0xFFFF - keys).astype(np.uint16)
    return bits.view(np.float16).astype(np.float32)


def _threshold_key(hist: np.ndarray, fraction: float) -> int:
    """The smallest key such that the activations at or above it are the top `fraction` of them (ties kept)."""
    keep = max(1, int(np.ceil(fraction * hist.sum())))
    from_top = np.cumsum(hist[::-1])
    return int(len(hist) - 1 - np.searchsorted(from_top, keep))


def token_array(store: ActivationStore) -> np.ndarray:
    """Every cached token id, at its global position (sequence id * seq_len + offset)."""
    seq_len = int(store.provenance["seq_len"])
    last = store.db.execute("select coalesce(max(id), -1) from sequences").fetchone()[0]
    out = np.zeros((last + 1) * seq_len, store.token_dtype())
    for sid, blob in store.db.execute("select id, tokens from sequences"):
        out[sid * seq_len : (sid + 1) * seq_len] = np.frombuffer(blob, dtype=store.token_dtype())
    return out


def batch_filters(
    store: ActivationStore, lo: int, hi: int, settings: FilterSettings, tokens: np.ndarray, n_sequences: int
) -> list[dict]:
    """The filter rows of latents lo..hi-1 (two ordered scans of their segments)."""
    seq_len = int(store.provenance["seq_len"])
    pos_counts: dict[int, np.ndarray] = {}
    thresholds: dict[int, int] = {}
    top_counts: dict[int, int] = {}  # activations at or above the threshold
    current, pos, hist = -1, np.zeros(seq_len, np.int64), np.zeros(1 << 16, np.int64)

    def close() -> None:
        if current >= 0:
            pos_counts[current] = pos[1:]
            thresholds[current] = key = _threshold_key(hist, settings.unigram_top_fraction)
            top_counts[current] = int(hist[key:].sum())

    for latent, positions, values in store.scan_segments(lo, hi):
        if latent != current:
            close()
            current, pos, hist = latent, np.zeros(seq_len, np.int64), np.zeros(1 << 16, np.int64)
        pos += np.bincount(positions % seq_len, minlength=seq_len)
        hist += np.bincount(order_keys(values), minlength=1 << 16)
    close()
    # Second pass: distinct tokens at the top activations, given up on as soon as there are too many.
    found: dict[int, dict[int, int]] = {}
    for latent, positions, values in store.scan_segments(lo, hi):
        seen = found.setdefault(latent, {})
        if len(seen) > settings.unigram_max_tokens or top_counts[latent] < settings.unigram_min_activations:
            continue
        ids, counts = np.unique(tokens[positions[order_keys(values) >= thresholds[latent]]], return_counts=True)
        if len(ids) > settings.unigram_max_tokens:  # too many already: no need to count them one by one
            found[latent] = dict.fromkeys(range(settings.unigram_max_tokens + 1), 0)
            continue
        for t, c in zip(ids.tolist(), counts.tolist()):
            seen[t] = seen.get(t, 0) + c
    return [
        filter_row(
            latent,
            positional_mi(pos_counts[latent], n_sequences) if latent in pos_counts else 0.0,
            found.get(latent, {}),
            top_counts.get(latent, 0),
            settings,
        )
        for latent in range(lo, hi)
    ]


def filter_row(latent: int, mi: float, seen: dict[int, int], top_count: int, settings: FilterSettings) -> dict:
    """A latent's filter row from its positional MI, the distinct tokens among its top activations with their
    counts (`seen`: more than max_tokens entries stands for "more than max_tokens"; empty when it has fewer than
    min_activations top activations) and how many top activations it has."""
    candidate = 0 < len(seen) <= settings.unigram_max_tokens and top_count >= settings.unigram_min_activations
    top = sorted(seen.items(), key=lambda kv: (-kv[1], kv[0])) if candidate else []
    return {
        "latent": latent,
        "positional_mi": round(mi, 6),
        "positional": int(mi >= settings.positional_mi_threshold),
        # distinct tokens among the top activations; max_tokens + 1 stands for "more than max_tokens"
        "top_tokens": min(len(seen), settings.unigram_max_tokens + 1),
        "unigram_candidate": int(candidate),
        "unigram_tokens": json.dumps([[t, c] for t, c in top]) if candidate else None,
        "unigram_fire": None,
        "unigram": None if candidate else 0,
    }


FILTER_COLUMNS = (
    "latent",
    "positional_mi",
    "positional",
    "top_tokens",
    "unigram_candidate",
    "unigram_tokens",
    "unigram_fire",
    "unigram",
)
INSERT_FILTERS = (
    f"insert or replace into latent_filters ({', '.join(FILTER_COLUMNS)})"
    f" values ({', '.join('?' * len(FILTER_COLUMNS))})"
)


def write_filter_rows(store: ActivationStore, rows: list[dict], next_latent: int, fingerprint: str) -> None:
    """Filter rows and the stage's resume point, with no transaction of its own (compaction writes them in the
    transaction of a band's last unit: store/onepass.py)."""
    store.db.conn.executemany(INSERT_FILTERS, [tuple(r[c] for c in FILTER_COLUMNS) for r in rows])
    done = next_latent >= int(store.provenance["num_latents"])
    store.set_stage(FILTERS_STAGE, fingerprint, {"next_latent": next_latent}, done)


def compute_filters(store: ActivationStore, settings: FilterSettings, progress=None, batch: int = 1000) -> int:
    """(Re)compute every latent's positional MI and unigram candidacy; returns the latents computed (0: done
    already for these settings over these chunks). Resumable, as the statistics are (store/stats.py)."""
    fingerprint = settings.filters_fingerprint(store)
    num_latents = int(store.provenance["num_latents"])
    state = store.stage(FILTERS_STAGE)
    start = 0
    if state is not None and state["fingerprint"] == fingerprint:
        if state["done_at"] is not None:
            return 0
        start = int(state["detail"].get("next_latent", 0))
    if progress is not None and start:
        progress(start)
    tokens = token_array(store) if start < num_latents else np.zeros(0, np.uint16)
    n_sequences = store.n_sequences()
    for lo in range(start, num_latents, batch):
        hi = min(lo + batch, num_latents)
        rows = batch_filters(store, lo, hi, settings, tokens, n_sequences)
        with store.db.conn:
            store.db["latent_filters"].upsert_all(rows, pk="latent")
            store.set_stage(FILTERS_STAGE, fingerprint, {"next_latent": hi}, hi == num_latents)
        kill_point(FILTERS_STAGE)
        if progress is not None:
            progress(hi - lo)
    if num_latents == 0 or start >= num_latents:
        with store.db.conn:
            store.set_stage(FILTERS_STAGE, fingerprint, {"next_latent": num_latents}, True)
    return num_latents - start


# ---- reading ------------------------------------------------------------------------------------------------


def filters_done(store: ActivationStore, settings: FilterSettings, which: str = "unigram") -> bool:
    """The filter `which` ("positional" or "unigram") is computed for these settings over the chunks the file
    holds (unigram: verified too)."""
    if which == "positional":
        return store.stage_done(FILTERS_STAGE, settings.filters_fingerprint(store))
    return store.stage_done(UNIGRAM_STAGE, settings.unigram_fingerprint(store))


def filters_current(store: ActivationStore, name: str) -> bool:
    """The filter `name` was computed to its end over the chunks the file holds, with whatever settings it was
    (what a selection reads: the file's flags; the cache stage recomputes them when the settings change)."""
    state = store.stage(FILTERS_STAGE if name == "positional" else UNIGRAM_STAGE)
    return (
        state is not None
        and state["done_at"] is not None
        and state["fingerprint"].startswith(store.chunk_fingerprint() + ";")
    )


def flagged(store: ActivationStore, name: str) -> set[int]:
    """The latents a filter flags ("positional" or "unigram": verified unigram latents)."""
    if name not in EXCLUSIONS:
        raise ValueError(name)
    if "latent_filters" not in store.db.table_names():
        return set()
    return {r[0] for r in store.db.execute(f"select latent from latent_filters where {name} = 1")}


def filter_counts(store: ActivationStore) -> dict:
    """How many latents each filter flags, for the report (None where the filters were never computed)."""
    if "latent_filters" not in store.db.table_names() or store.stage(FILTERS_STAGE) is None:
        return {"positional": None, "unigram_candidates": None, "unigram_verified": None, "unigram": None}
    positional, candidates, verified, unigram = store.db.execute(
        "select coalesce(sum(positional), 0), coalesce(sum(unigram_candidate), 0),"
        " count(unigram_fire), coalesce(sum(unigram), 0) from latent_filters"
    ).fetchone()
    return {
        "positional": positional,
        "unigram_candidates": candidates,
        "unigram_verified": verified,
        "unigram": unigram,
    }
