"""Metrics recomputed by hand from stored outcomes, to check the ones the scorers store."""

from __future__ import annotations

import math

import pytest


def auroc_by_ranks(labels: list[int], scores: list[float]) -> float:
    """AUROC as the share of (positive, negative) pairs that the scores order correctly, a tie counting half
    (Mann-Whitney): written out here, independent of the scikit-learn call the engine makes."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def assert_metrics_match_outcomes(r: dict) -> None:
    """A stored score row's counts and metrics equal what its own stored outcomes give: failures are counted,
    never scored as wrong answers, and every number in the row can be traced back to an example."""
    from collections import Counter

    out = r["outcomes"]
    failed = [o for o in out if o["failed"]]
    answered = [o for o in out if not o["failed"] and o["prediction"] is not None]
    assert (r["n"], r["n_failed"], r["n_scored"]) == (len(out), len(failed), len(answered)), r["scorer"]
    assert sum(r["errors"].values()) == r["n_failed"], (r["scorer"], r["errors"])
    cm = Counter((o["label"], o["prediction"]) for o in answered)
    assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (cm[1, 1], cm[0, 1], cm[0, 0], cm[1, 0]), r["scorer"]
    assert r["accuracy"] == (pytest.approx((cm[1, 1] + cm[0, 0]) / len(answered)) if answered else None)
    ranked = [o for o in out if not o["failed"] and o["probability"] is not None and math.isfinite(o["probability"])]
    if {o["label"] for o in ranked} == {0, 1}:
        want = auroc_by_ranks([o["label"] for o in ranked], [o["probability"] for o in ranked])
        assert r["auroc"] == pytest.approx(want, abs=1e-9), r["scorer"]
    else:
        assert r["auroc"] is None, r["scorer"]
