"""95% confidence intervals of one score row's metrics, from its outcomes (what `scores.ci` stores).

- accuracy, precision, recall: Wilson score intervals of the proportion (scipy.stats.binomtest ... proportion_ci);
- balanced accuracy, F1, AUROC and simulation's correlation: percentile bootstrap over the scored examples, resampled
  within each label (activating / non-activating kept at their drawn sizes, as the sample set draws them, so every
  resample has both classes wherever the metric needs them), N_RESAMPLES times from a generator seeded with SEED:
  the same outcomes always give the same interval, and a real row and its control (scored on the same items in the
  same order) are resampled alike.

A metric the row leaves undefined (None) gets no interval. Intervention pools every KL target's prompt pairs into its
row's metrics, so its interval is over all of them too (the per-target metrics in its details get none).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np

from .metrics import ExampleOutcome

CONFIDENCE = 0.95
N_RESAMPLES = 1000
SEED = 13  # the bootstrap's generator seed (fixed: an interval is reproducible from the stored outcomes)
WILSON = ("accuracy", "precision", "recall")
BOOTSTRAP = ("balanced_accuracy", "f1", "auroc", "correlation")
DIGITS = 6  # stored precision


def outcomes_from_stored(rows: Sequence[dict]) -> list[ExampleOutcome]:
    """scores.outcomes (a list of dicts) -> ExampleOutcomes."""
    return [
        ExampleOutcome(
            int(o["label"]),
            int(o.get("decile") or 0),
            o.get("prediction"),
            o.get("probability"),
            bool(o.get("failed")),
        )
        for o in rows
    ]


@lru_cache(maxsize=4096)  # rows share their (k, n): a score stage asks for the same few thousand again and again
def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The Wilson score interval of k successes in n trials (None for n = 0)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest  # here, not at the top: scipy.stats costs CLI start-up

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _draws(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[size, n] indices: each row one bootstrap resample of n items (with replacement)."""
    return rng.integers(0, n, (size, n)) if n else np.zeros((size, 0), np.int64)


def _counts(draws: np.ndarray, n: int) -> np.ndarray:
    """[size, n] how often each item is drawn in each resample (elementwise numpy only: the products below are done
    without BLAS, whose threads cost more than these small products on a busy machine)."""
    size = len(draws)
    flat = (draws + (np.arange(size) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)


def _percentile(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """The percentile interval of the defined (finite) resampled values; None when fewer than half are defined."""
    ok = values[np.isfinite(values)]
    if len(ok) < max(1, len(values) // 2):
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(ok, [alpha, 1 - alpha])
    return float(low), float(high)


def _confusion_resamples(y: np.ndarray, p: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    """tp, fp, tn, fn per stratified resample of (label, prediction) pairs."""
    rng = np.random.default_rng(seed)
    pos, neg = p[y == 1], p[y == 0]
    tp = pos[_draws(rng, len(pos), n_boot)].sum(axis=1)
    fp = neg[_draws(rng, len(neg), n_boot)].sum(axis=1)
    return tp, fp, len(neg) - fp, len(pos) - tp


def _auroc_resamples(y: np.ndarray, s: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """AUROC per stratified resample: the share of (positive, negative) pairs ranked right, ties half (the
    Mann-Whitney form of roc_auc_score). Negatives sorted by score once: each positive beats the drawn negatives
    below it (a cumulative count per resample) and ties with those at its score."""
    rng = np.random.default_rng(seed)
    pos, neg = s[y == 1], np.sort(s[y == 0])
    cp = _counts(_draws(rng, len(pos), n_boot), len(pos))
    cn = np.cumsum(_counts(_draws(rng, len(neg), n_boot), len(neg)), axis=1)
    cn = np.concatenate([np.zeros((n_boot, 1)), cn], axis=1)  # [:, k]: drawn negatives among the k lowest
    below = cn[:, np.searchsorted(neg, pos, side="left")]
    upto = cn[:, np.searchsorted(neg, pos, side="right")]
    return (cp * (below + upto)).sum(axis=1) / (2 * len(pos) * len(neg))


def _correlation_resamples(
    labels: np.ndarray, truth: list[np.ndarray], predicted: list[np.ndarray], n_boot: int, seed: int
) -> np.ndarray:
    """Simulation's pooled Pearson correlation per resample of its excerpts (stratified by label): each excerpt's sums
    (tokens, x, y, x^2, y^2, xy, centred on the pooled means for precision) added up with the resample's counts."""
    rng = np.random.default_rng(seed)
    mx = float(np.concatenate(truth).mean())
    my = float(np.concatenate(predicted).mean())
    stats = np.array(
        [
            [
                len(x),
                (x - mx).sum(),
                (y - my).sum(),
                ((x - mx) ** 2).sum(),
                ((y - my) ** 2).sum(),
                ((x - mx) * (y - my)).sum(),
            ]
            for x, y in zip(truth, predicted)
        ]
    )
    sums = np.zeros((n_boot, 6))
    for label in (1, 0):
        mine = labels == label
        sums += stats[mine][_draws(rng, int(mine.sum()), n_boot)].sum(axis=1)
    n, sx, sy, sxx, syy, sxy = sums.T
    with np.errstate(divide="ignore", invalid="ignore"):
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        r = (sxy - sx * sy / n) / np.sqrt(vx * vy)
    r[~((vx > 1e-12 * np.maximum(sxx, 1)) & (vy > 1e-12 * np.maximum(syy, 1)))] = np.nan  # a constant side
    return r


def score_intervals(
    outcomes: Sequence[ExampleOutcome],
    metrics: dict,
    truth: Sequence[np.ndarray | None] | None = None,
    predicted: Sequence | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_boot: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, list[float]]:
    """{metric: [low, high]} for every metric `metrics` defines (a score row, or classification_metrics' dict).

    `truth` / `predicted` (simulation): per outcome, the true and the predicted per-token activations (None where the
    excerpt failed); without them the correlation gets no interval."""
    out: dict[str, tuple[float, float] | None] = {}
    scored = [o for o in outcomes if not o.failed and o.prediction is not None]
    y = np.array([o.label for o in scored], dtype=np.int64)
    p = np.array([int(o.prediction) for o in scored], dtype=np.int64)  # type: ignore[arg-type]
    tp, fp = int(((y == 1) & (p == 1)).sum()), int(((y == 0) & (p == 1)).sum())
    tn, fn = int(((y == 0) & (p == 0)).sum()), int(((y == 1) & (p == 0)).sum())
    wilson_counts = {"accuracy": (tp + tn, len(scored)), "precision": (tp, tp + fp), "recall": (tp, tp + fn)}
    for name, (k, n) in wilson_counts.items():
        if metrics.get(name) is not None:
            out[name] = wilson(k, n, confidence)
    if metrics.get("balanced_accuracy") is not None or metrics.get("f1") is not None:
        btp, bfp, btn, bfn = _confusion_resamples(y, p, n_boot, seed)
        with np.errstate(divide="ignore", invalid="ignore"):
            if metrics.get("balanced_accuracy") is not None:
                out["balanced_accuracy"] = _percentile((btp / (btp + bfn) + btn / (btn + bfp)) / 2, confidence)
            if metrics.get("f1") is not None:  # 2PR / (P + R), which is 0 where no positive was found
                out["f1"] = _percentile(2 * btp / (2 * btp + bfp + bfn), confidence)
    if metrics.get("auroc") is not None:
        ranked = [o for o in outcomes if not o.failed and o.probability is not None and math.isfinite(o.probability)]
        ry = np.array([o.label for o in ranked], dtype=np.int64)
        rs = np.array([o.probability for o in ranked], dtype=np.float64)
        if 0 < ry.sum() < len(ry):
            out["auroc"] = _percentile(_auroc_resamples(ry, rs, n_boot, seed), confidence)
    if metrics.get("correlation") is not None and truth is not None and predicted is not None:
        pairs = [
            (o.label, np.asarray(t, np.float64).ravel(), np.asarray(q, np.float64).ravel())
            for o, t, q in zip(outcomes, truth, predicted)
            if not o.failed and t is not None and q is not None and len(t) == len(q) and len(t)
        ]
        if len(pairs) >= 2:
            labels = np.array([label for label, _, _ in pairs])
            r = _correlation_resamples(labels, [t for _, t, _ in pairs], [q for _, _, q in pairs], n_boot, seed)
            out["correlation"] = _percentile(r, confidence)
    return {k: [round(lo, DIGITS), round(hi, DIGITS)] for k, v in out.items() if v is not None for lo, hi in [v]}


def row_intervals(row: dict, truth: Sequence[np.ndarray | None] | None = None) -> dict[str, list[float]]:
    """The intervals of a stored score row (outcomes and details parsed, as Results.iter_scores gives them); `truth`:
    simulation's true activations per outcome (read from the cache)."""
    details = row.get("details") or {}
    return score_intervals(outcomes_from_stored(row.get("outcomes") or []), row, truth, details.get("predicted"))


def overlaps(a: Sequence[float], b: Sequence[float]) -> bool:
    """Two closed intervals share a point."""
    return a[0] <= b[1] and b[0] <= a[1]
