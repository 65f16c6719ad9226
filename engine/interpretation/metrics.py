"""Metrics of an explanation used as a classifier, per latent and over latents.

Failed or unparseable answers are excluded from every metric and counted in `n_failed`: a failure is
never a wrong prediction. A metric that is undefined (no positives, one class only) is None, not 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from autointerp.store.scorer_meta import METRICS

# "correlation" is simulation's (Pearson, simulated vs true activations); classification_metrics leaves it out.
METRIC_NAMES = METRICS  # the `scores` table's metric columns, named once in the store


@dataclass
class ExampleOutcome:
    """One scored example."""

    label: int  # 1: the explanation should fire (activating / correctly marked), 0: it should not
    decile: int  # 1..n_deciles for activating examples (1 = weakest bin), 0 for non-activating ones
    prediction: int | None = None  # the scorer's 0/1 answer; None where there is none
    probability: float | None = None  # P(label 1): from logprobs, or a similarity score
    failed: bool = False  # the call failed or its answer could not be parsed


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def classification_metrics(outcomes: Sequence[ExampleOutcome], n_deciles: int = 10) -> dict:
    failed = [o for o in outcomes if o.failed]
    scored = [o for o in outcomes if not o.failed and o.prediction is not None]
    y = np.array([o.label for o in scored], dtype=int)
    p = np.array([o.prediction for o in scored], dtype=int)
    tp = int(((y == 1) & (p == 1)).sum())
    fp = int(((y == 0) & (p == 1)).sum())
    tn = int(((y == 0) & (p == 0)).sum())
    fn = int(((y == 1) & (p == 0)).sum())
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    balanced = (recall + specificity) / 2 if recall is not None and specificity is not None else None

    ranked = [o for o in outcomes if not o.failed and o.probability is not None and math.isfinite(o.probability)]
    labels = {o.label for o in ranked}
    from sklearn.metrics import roc_auc_score  # here, not at the top: importing sklearn costs ~1 s of CLI start-up

    auroc = (
        float(roc_auc_score([o.label for o in ranked], [o.probability for o in ranked])) if labels == {0, 1} else None
    )
    per_decile = []
    for d in range(1, n_deciles + 1):
        hits = [int(o.prediction or 0) for o in scored if o.label == 1 and o.decile == d]  # never None in scored
        per_decile.append(sum(hits) / len(hits) if hits else None)
    return {
        "n": len(outcomes),
        "n_scored": len(scored),
        "n_failed": len(failed),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": _ratio(tp + tn, len(scored)),
        "balanced_accuracy": balanced,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "auroc": auroc,
        "n_auroc": len(ranked),
        "recall_per_decile": per_decile,
    }


def summarise(per_latent: Iterable[dict], names: Sequence[str] = METRIC_NAMES) -> dict:
    """Mean, standard error and count of each metric over latents (latents where it is None are left
    out of that metric and show in its count)."""
    rows = list(per_latent)
    columns = {key: [r.get(key) for r in rows] for key in (*names, "n_failed", "n")}
    return summarise_columns(columns, len(rows), names)


def summarise_columns(columns: dict[str, list], n_latents: int, names: Sequence[str] = METRIC_NAMES) -> dict:
    """`summarise` over columns (one list per metric, None where a latent has none, plus "n_failed" and "n"): what
    a report over a million latents can hold, where a dict per latent would not fit."""
    out: dict = {}
    for name in names:
        vals = np.array([v for v in columns[name] if v is not None], dtype=float)
        out[name] = {
            "mean": float(vals.mean()) if len(vals) else None,
            "sem": float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else None,
            "n": int(len(vals)),
        }
    out["n_latents"] = n_latents
    out["n_failed"] = int(sum(v or 0 for v in columns["n_failed"]))
    out["n_examples"] = int(sum(v or 0 for v in columns["n"]))
    return out
