"""One pass: compaction computes the statistics, the filters' store part and the co-activation sketches from the
activations it already holds, instead of three more passes decoding every segment.

Compaction (store/compact.py) goes band by band of BAND latents, each band in units of consecutive chunks; the
unit's activations, decoded and sorted by latent, are handed to `OnePass.add`, which folds them into the band's
accumulators. Once the band's last unit is added, the band's rows are computed, and written in that unit's
transaction together with each stage's resume point (`cache.stats`, `cache.filters`: next_latent = the band's
end) and its sketches. A kill -9 anywhere leaves every band either finished (rows written, nothing of it staged)
or not; the resumed run starts again at the first unfinished band and first decodes what of it is already
compacted (`begin_band`): the same activations, so the same accumulators, so the same rows.

The rows are those the separate passes write (store/stats.py `batch_stats`, store/filters.py `batch_filters`),
number for number (tests/test_compact.py and tests/test_onepass.py compare them):
- a latent's total is summed segment by segment, each segment's values as float32 summed in float64, in segment
  order, exactly as `batch_stats` sums them; windows are counted across unit ends as across segment ends;
- every value's fine-histogram bin (numpy's own arithmetic, for a block of latents at once: `fine_histograms`)
  and the top fraction's threshold come from the exact count of each float16 value per latent (a sparse
  histogram), so they do not depend on how the activations were split;
- a token is among a latent's top activations iff its strongest activation with the latent is: the band holds
  each (latent, token)'s strongest value, which gives every latent's distinct top tokens exactly; only the unigram
  candidates (1..max_tokens of them) need their counts, read back from their own segments at the band's end.
  Past HOLD distinct (latent, token) pairs the band lets them go and reads back every eligible latent instead
  (memory stays bounded at any length; the rows are the same).

The statistics read `n_tokens` and the filters the token ids and `n_sequences` of every committed chunk: the pass
runs once the forward is done. The separate passes stay for files compacted before (their stage rows are missing
or stale, so they compute as before) and for filter settings changed later (`autointerp filters`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .compact import compact
from .db import ActivationStore
from .filters import (
    FILTERS_STAGE,
    FilterSettings,
    filter_row,
    key_values,
    order_keys,
    positional_mi,
    token_array,
    write_filter_rows,
)
from .layout import BAND, BAND_BITS, COMPACT_BUDGET, window_ids
from .sketches import BandSketch, sketch_fingerprint, stored_bands, write_band_sketch
from .stages import CACHE_STATS
from .stats import FINE_BINS, stats_row, write_stats_rows

HIST_BLOCK = 256
SLICE = 1 << 20  # activations of a unit folded in at a time
HOLD = COMPACT_BUDGET // 2  # (latent, value, token) counts a band holds at most before it reads its tokens back instead


def fine_histograms(lat: np.ndarray, values: np.ndarray, weights: np.ndarray, tops: np.ndarray, n: int) -> np.ndarray:
    """[n, FINE_BINS] counts: for each latent i, what np.histogram(its values, FINE_BINS, range=(0.0, tops[i]),
    weights) gives with tops[i] a Python float (as store/stats.py calls it), for all latents at once. numpy's own
    steps, vectorised: the bin from float64 arithmetic, then the correction against the float32 edges that
    np.linspace(0.0, top, FINE_BINS + 1, dtype=float32) makes (i * (top / FINE_BINS), the last edge top itself).
    tests/test_compact.py checks it against np.histogram."""
    top = tops[lat]
    keep = (values >= 0) & (values <= top.astype(np.float32))
    lat, values, weights, top = lat[keep], values[keep], weights[keep], top[keep]
    idx = ((values.astype(np.float64) / top) * FINE_BINS).astype(np.intp)
    idx[idx == FINE_BINS] -= 1
    step = top / FINE_BINS

    def edge(i: np.ndarray) -> np.ndarray:
        return np.where(i == FINE_BINS, top, i * step).astype(np.float32)

    idx[values < edge(idx)] -= 1
    idx[(values >= edge(idx + 1)) & (idx != FINE_BINS - 1)] += 1
    flat = np.bincount(lat * FINE_BINS + idx, weights=weights, minlength=n * FINE_BINS)
    return flat.astype(np.int64).reshape(n, FINE_BINS)


def _reduce(codes: np.ndarray, counts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct codes and their summed counts (counts None: one each)."""
    if counts is None:
        return np.unique(codes, return_counts=True)
    order = np.argsort(codes, kind="stable")  # timsort: sorted runs (reduced parts) merge in linear time
    codes, counts = codes[order], counts[order]
    firsts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, np.intp)
    return codes[firsts], np.add.reduceat(counts, firsts) if len(codes) else counts


def _start_of(stage: dict | None, fingerprint: str) -> int:
    """The first latent a stage still needs (0: all of them; a large number: none)."""
    if stage is None or stage["fingerprint"] != fingerprint:
        return 0
    if stage["done_at"] is not None:
        return 1 << 62
    return int(stage["detail"].get("next_latent", 0))


class Counts:
    """Sparse counts of int64 codes, held as parts and reduced when they grow past `hold`."""

    def __init__(self, hold: int):
        self.hold, self.held = hold, 0
        self.parts: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.reduced = True  # parts is one reduced part (or none)

    def add(self, codes: np.ndarray, counts: np.ndarray | None = None) -> None:
        if counts is None:  # each part sorted and reduced as it comes: a reduce then merges sorted runs
            codes, counts = np.unique(codes, return_counts=True)
        self.parts.append((codes, counts))
        self.held += len(codes)
        self.reduced = False
        if self.held > self.hold:
            self.reduce()

    def reduce(self) -> tuple[np.ndarray, np.ndarray]:
        if self.reduced and self.parts:
            codes, counts = self.parts[0]
            assert counts is not None  # a reduced part carries its counts
            return codes, counts
        if not self.parts:
            codes, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
        elif all(c is None for _, c in self.parts):
            codes, counts = _reduce(np.concatenate([p for p, _ in self.parts]), None)
        else:
            codes = np.concatenate([p for p, _ in self.parts])
            counts = np.concatenate([np.ones(len(p), np.int64) if c is None else c for p, c in self.parts])
            codes, counts = _reduce(codes, counts)
        self.parts, self.held, self.reduced = [(codes, counts)], len(codes), True
        return codes, counts


class Band:
    """One band's accumulators."""

    def __init__(self, op: OnePass, band: int, stats: bool, filters: bool, sketch: bool):
        self.band, self.first = band, band << BAND_BITS
        self.n = min(BAND, op.num_latents - self.first)
        self.op, self.stats, self.filters, self.sketch = op, stats, filters, sketch
        n = self.n
        self.total = np.zeros(n, np.float64)
        self.n_windows = np.zeros(n, np.int64)
        self.last_window = np.full(n, -1, np.int64)
        self.counts = Counts(HOLD)  # value counts per latent: local << 16 | key
        # Per (latent, token), its strongest activation's key: local << 48 | token << 16 | key, reduced to the
        # largest of each (latent, token) and to each latent's max_tokens + 1 strongest tokens (_reduce_token_max).
        self.token_max: list[np.ndarray] = []
        self.token_held = 0
        self.pos = np.zeros((n, op.seq_len), np.int64) if filters else None
        self.sketcher = BandSketch(n, op.seq_len, op.window_len) if sketch else None
        self.last_unit: tuple | None = None
        self.stats_rows: list[dict] = []
        self.filter_rows: list[dict] = []
        self.sig: np.ndarray | None = None

    def add(self, local, positions, values, starts, ends) -> None:
        local = np.asarray(local)
        self.last_unit = (local, positions, values)
        if not len(local):
            return
        if self.stats:
            for s, e in zip(starts.tolist(), ends.tolist()):  # in segment order, as batch_stats sums them
                self.total[local[s]] += float(values[s:e].astype(np.float32).sum(dtype=np.float64))
        # The rest is additive (counts, minima, windows carried per latent): in slices, so that its temporaries
        # stay small beside the unit compaction holds.
        for a in range(0, len(local), SLICE):
            self._add_slice(local[a : a + SLICE], positions[a : a + SLICE], values[a : a + SLICE])

    def _add_slice(self, local, positions, values) -> None:
        op, n = self.op, self.n
        if self.stats:
            w = window_ids(positions, op.seq_len, op.window_len)
            new = np.ones(len(w), bool)
            new[1:] = (w[1:] != w[:-1]) | (local[1:] != local[:-1])
            runs = np.flatnonzero(np.r_[True, local[1:] != local[:-1]])
            run_ends = np.r_[runs[1:], len(local)] - 1
            new[runs] = w[runs] != self.last_window[local[runs]]
            self.n_windows += np.bincount(local, weights=new, minlength=n).astype(np.int64)
            self.last_window[local[run_ends]] = w[run_ends]
        if self.stats or self.filters:
            keys = order_keys(values)
            self.counts.add((local.astype(np.int64) << 16) | keys)
            if self.filters:
                codes = np.sort((local.astype(np.int64) << 48) | (op.tokens[positions].astype(np.int64) << 16) | keys)
                pair = codes >> 16
                self.token_max.append(codes[np.r_[pair[1:] != pair[:-1], True]])  # a sorted run, deduplicated
                self.token_held += len(local)
                if self.token_held > HOLD:
                    self._reduce_token_max()
        if self.filters:
            assert self.pos is not None  # made with the filters' accumulators
            self.pos += np.bincount(
                local.astype(np.int64) * op.seq_len + positions % op.seq_len, minlength=n * op.seq_len
            ).reshape(n, op.seq_len)
        if self.sketch:
            self.sketcher.add(local, positions)

    def _reduce_token_max(self) -> np.ndarray:
        """Each (latent, token)'s largest key, and of each latent only its max_tokens + 1 tokens with the largest:
        a latent's distinct top tokens are those whose largest key is at or above its threshold, so if the
        (max_tokens + 1)-th largest is, it has too many, and if not, no token dropped here is among them."""
        codes = np.sort(np.concatenate(self.token_max), kind="stable") if self.token_max else np.zeros(0, np.int64)
        if len(codes):
            pair = codes >> 16
            codes = codes[np.r_[pair[1:] != pair[:-1], True]]  # the largest key of each (latent, token)
        if len(codes) > HOLD // 2:  # only then worth a second sort: each latent's strongest max_tokens + 1
            lat = codes >> 48
            order = np.lexsort((-(codes & 0xFFFF), lat))  # by latent, largest key first
            lat_sorted = lat[order]
            firsts = np.r_[0, np.flatnonzero(lat_sorted[1:] != lat_sorted[:-1]) + 1]
            rank = np.arange(len(order)) - np.repeat(firsts, np.diff(np.r_[firsts, len(order)]))
            codes = np.sort(codes[order[rank <= self.op.settings.unigram_max_tokens]])
        self.token_max, self.token_held = [codes], len(codes)
        return codes

    def finish(self) -> None:
        n = self.n
        key_codes, key_counts = self.counts.reduce()
        lat = (key_codes >> 16).astype(np.intp)
        keys = key_codes & 0xFFFF
        bounds = np.searchsorted(lat, np.arange(n + 1))  # each latent's run of (key, count), keys ascending
        count = np.bincount(lat, weights=key_counts, minlength=n).astype(np.int64)  # exact below 2**53
        if self.stats:
            self.stats_rows = self._stats_rows(keys, key_counts, bounds, count)
        if self.filters:
            self.filter_rows = self._filter_rows(keys, key_counts, bounds, count)
        if self.sketch:
            self.sig = self.sketcher.sig

    def _stats_rows(self, keys, key_counts, bounds, count) -> list[dict]:
        op, rows = self.op, []
        for b0 in range(0, self.n, HIST_BLOCK):  # the fine histograms of HIST_BLOCK latents at a time (8 MB)
            b1 = min(b0 + HIST_BLOCK, self.n)
            lo, hi = bounds[b0], bounds[b1]
            values = key_values(keys[lo:hi])
            lat = np.repeat(np.arange(b1 - b0), np.diff(bounds[b0 : b1 + 1]))
            vmax = np.zeros(b1 - b0)
            fired = bounds[b0 + 1 : b1 + 1] > bounds[b0:b1]
            vmax[fired] = values[bounds[b0 + 1 : b1 + 1][fired] - 1 - lo]  # keys ascend with values
            fine = fine_histograms(lat, values, key_counts[lo:hi], np.where(vmax > 0, vmax, 1.0), b1 - b0)
            for i in range(b0, b1):
                c = int(count[i])
                vm = float(vmax[i - b0]) if c else 0.0
                total, windows = (float(self.total[i]), int(self.n_windows[i])) if c else (0.0, 0)
                rows.append(stats_row(self.first + i, c, total, vm, windows, fine[i - b0], op.n_tokens))
        return rows

    def _filter_rows(self, keys, key_counts, bounds, count) -> list[dict]:
        op, n, st = self.op, self.n, self.op.settings
        assert st is not None  # a band computes filters only with settings
        threshold = np.zeros(n, np.int64)
        top_count = np.zeros(n, np.int64)
        for i in np.flatnonzero(count).tolist():
            lo, hi = bounds[i], bounds[i + 1]
            keep = max(1, int(np.ceil(st.unigram_top_fraction * int(count[i]))))
            from_top = np.cumsum(key_counts[lo:hi][::-1])  # as filters._threshold_key, over the keys present
            j = int(np.searchsorted(from_top, keep))
            threshold[i] = keys[hi - 1 - j]
            top_count[i] = from_top[j]
        eligible = top_count >= st.unigram_min_activations
        found = TopTokens(n, st.unigram_max_tokens)
        # A token is among a latent's top activations iff its strongest activation is: the distinct tokens at the
        # top (up to max_tokens + 1), exactly. Only the candidates (1..max_tokens of them) need their counts: those
        # are read back from their segments and the last unit.
        token_max = self._reduce_token_max()
        lat = (token_max >> 48).astype(np.intp)
        top = eligible[lat] & ((token_max & 0xFFFF) >= threshold[lat])
        distinct = np.bincount(lat[top], minlength=n)
        found.too_many = eligible & (distinct > st.unigram_max_tokens)
        found.read_back(self, threshold, eligible & ~found.too_many & (distinct > 0), sparse=True)
        rows = []
        for i in range(n):
            mi = positional_mi(self.pos[i, 1:], op.n_sequences) if count[i] else 0.0
            seen = found.seen(i) if eligible[i] else {}
            rows.append(filter_row(self.first + i, mi, seen, int(top_count[i]), st))
        return rows


class TopTokens:
    """Distinct tokens at each latent's top activations with their counts, given up on (more than `max_tokens`)
    as soon as there are too many: what filters.batch_filters' second pass finds, whatever order they come in."""

    def __init__(self, n: int, max_tokens: int):
        self.n, self.max_tokens = n, max_tokens
        self.pairs = Counts(HOLD)  # local << 32 | token
        self.too_many = np.zeros(n, bool)
        self._bounds: np.ndarray | None = None

    def add(self, codes, counts, threshold, eligible, token_bits: int) -> None:
        lat = (codes >> (16 + token_bits)).astype(np.intp)
        key = (codes >> token_bits) & 0xFFFF
        sel = eligible[lat] & ~self.too_many[lat] & (key >= threshold[lat])
        tok = codes[sel] & ((1 << token_bits) - 1)
        self.pairs.add((lat[sel].astype(np.int64) << 32) | tok, None if counts is None else counts[sel])
        pairs, _ = self.pairs.reduce()
        distinct = np.bincount((pairs >> 32).astype(np.intp), minlength=self.n)
        over = distinct > self.max_tokens
        if over.any():
            self.too_many |= over
            p, c = self.pairs.parts[0]
            drop = over[(p >> 32).astype(np.intp)]
            self.pairs.parts, self.pairs.held = [(p[~drop], c[~drop])], int((~drop).sum())

    def read_back(self, band: Band, threshold, eligible, sparse: bool = False) -> None:
        """The tokens at the top activations of the `eligible` latents, from the band's committed segments and its
        last unit (not committed yet). `sparse`: read only those latents' segments, one latent at a time."""
        op = band.op
        first = band.first
        parts: list = []
        held = 0
        if sparse and eligible.sum() * 4 < band.n:
            ranges = [(first + i, first + i + 1) for i in np.flatnonzero(eligible).tolist()]
        else:
            ranges = [(first, first + band.n)] if eligible.any() else []

        def flush() -> None:
            nonlocal parts, held
            if parts:
                local = np.concatenate([p[0] for p in parts])
                positions = np.concatenate([p[1] for p in parts])
                values = np.concatenate([p[2] for p in parts])
                self._add_arrays(local, positions, values, threshold, eligible, op)
            parts, held = [], 0

        for lo, hi in ranges:
            for latent, positions, values in op.store.scan_segments(lo, hi):
                parts.append((np.full(len(positions), latent - first, np.int64), positions, values))
                held += len(positions)
                if held >= COMPACT_BUDGET:
                    flush()
        flush()
        if band.last_unit is not None and eligible.any():  # the band's last unit: not committed yet
            local, positions, values = band.last_unit
            self._add_arrays(np.asarray(local, np.int64), positions, values, threshold, eligible, op)

    def _add_arrays(self, local, positions, values, threshold, eligible, op) -> None:
        codes = (((local << 16) | order_keys(values)) << op.token_bits) | op.tokens[positions].astype(np.int64)
        self.add(codes, None, threshold, eligible, op.token_bits)

    def seen(self, i: int) -> dict[int, int]:
        if self.too_many[i]:
            return dict.fromkeys(range(self.max_tokens + 1), 0)
        if self._bounds is None:
            pairs, self._counts = self.pairs.reduce()
            self._tokens = pairs & 0xFFFFFFFF
            self._bounds = np.searchsorted(pairs >> 32, np.arange(self.n + 1))
        lo, hi = self._bounds[i], self._bounds[i + 1]
        return dict(zip(self._tokens[lo:hi].tolist(), self._counts[lo:hi].tolist()))


class OnePass:
    """The compaction hook (store/compact.py UnitHook) that computes the statistics, the filters' store part and
    the sketches of the bands that still need them."""

    def __init__(self, store: ActivationStore, window_len: int, settings: FilterSettings | None = None):
        prov = store.provenance
        self.store = store
        self.num_latents, self.seq_len = int(prov["num_latents"]), int(prov["seq_len"])
        self.window_len = int(window_len)
        self.n_tokens, self.n_sequences = store.n_tokens(), store.n_sequences()
        self.stats_fp = store.stats_fingerprint(window_len)
        self.stats_from = _start_of(store.stage(CACHE_STATS), self.stats_fp)
        self.settings = settings
        self.filters_fp = settings.filters_fingerprint(store) if settings is not None else ""
        self.filters_from = _start_of(store.stage(FILTERS_STAGE), self.filters_fp) if settings is not None else 1 << 62
        self.sketch_fp = sketch_fingerprint(store, window_len)
        n_bands = -(-self.num_latents // BAND)
        have = stored_bands(store, self.sketch_fp)
        self.sketch_bands = {b for b in range(n_bands) if b not in have}
        if self.filters_from < self.num_latents:
            self.tokens = token_array(store)
            self.token_bits = 16 if self.tokens.dtype.itemsize <= 2 else 32
        else:
            self.tokens, self.token_bits = np.zeros(0, np.uint16), 16
        self.current: Band | None = None
        self.written = [0, 0, 0]  # latents whose statistics, filter rows and sketches were written

    def _needs(self, band: int) -> tuple[bool, bool, bool]:
        end = min((band + 1) << BAND_BITS, self.num_latents)
        return self.stats_from < end, self.filters_from < end, band in self.sketch_bands

    def bands(self) -> list[int]:
        return [b for b in range(-(-self.num_latents // BAND)) if any(self._needs(b))]

    def begin_band(self, band: int) -> None:
        self.current = acc = Band(self, band, *self._needs(band))
        first = band << BAND_BITS
        parts: list = []
        held = 0

        def flush() -> None:
            nonlocal parts, held
            if parts:
                local = np.concatenate([np.full(len(p), lat - first, np.uint16) for lat, p, _ in parts])
                ends = np.cumsum([len(p) for _, p, _ in parts])
                acc.add(
                    local,
                    np.concatenate([p for _, p, _ in parts]),
                    np.concatenate([v for _, _, v in parts]),
                    np.r_[0, ends[:-1]],
                    ends,
                )
            parts, held = [], 0

        # What of the band is compacted already (a resumed pass, or a cache extended after its compaction).
        for latent, positions, values in self.store.scan_segments(first, first + acc.n):
            parts.append((latent, positions, values))
            held += len(positions)
            if held >= COMPACT_BUDGET:
                flush()
        flush()
        acc.last_unit = None

    def add(self, local, positions, values, starts, ends) -> None:
        self.current.add(local, positions, values, starts, ends)

    def finish_band(self, band: int) -> None:
        self.current.finish()

    def write_band(self, band: int) -> None:
        acc, end = self.current, min((band + 1) << BAND_BITS, self.num_latents)
        if acc.stats:
            write_stats_rows(self.store, acc.stats_rows, end, self.stats_fp)
        if acc.filters:
            write_filter_rows(self.store, acc.filter_rows, end, self.filters_fp)
        if acc.sketch:
            assert acc.sig is not None
            write_band_sketch(self.store.db.conn, band, self.sketch_fp, acc.sig)
        self.written = [w + acc.n * flag for w, flag in zip(self.written, (acc.stats, acc.filters, acc.sketch))]
        self.current = None


@dataclass
class OnePassResult:
    moved: int  # activations compacted
    stats: int  # latents whose statistics the pass wrote
    filters: int  # latents whose filter rows it wrote
    sketches: int  # latents whose sketches it stored


def compact_in_one_pass(
    store: ActivationStore,
    window_len: int,
    settings: FilterSettings | None = None,
    progress=None,
    budget: int = COMPACT_BUDGET,
) -> OnePassResult:
    """Compact what is staged, computing on the way every band's statistics (for `window_len`), filter rows (for
    `settings`, when given) and co-activation sketches that are not stored yet."""
    if store.provenance is None or int(store.provenance["num_latents"]) == 0:
        return OnePassResult(compact(store, progress, budget), 0, 0, 0)
    hook = OnePass(store, window_len, settings)
    moved = compact(store, progress, budget, hook=hook)
    return OnePassResult(moved, *hook.written)
