"""Metrics against confusion matrices worked out by hand; failures excluded and counted."""

import math

import pytest

from autointerp.engine.interpretation.metrics import ExampleOutcome as O
from autointerp.engine.interpretation.metrics import classification_metrics, summarise


def test_metrics_match_a_hand_computed_confusion_matrix():
    # 6 activating (deciles 1..3), 4 non-activating; tp=4, fn=2, fp=1, tn=3; plus 2 failures.
    outcomes = [
        O(1, 1, 1),
        O(1, 1, 0),
        O(1, 2, 1),
        O(1, 2, 1),
        O(1, 3, 1),
        O(1, 3, 0),
        O(0, 0, 1),
        O(0, 0, 0),
        O(0, 0, 0),
        O(0, 0, 0),
        O(1, 3, None, None, failed=True),
        O(0, 0, None, None, failed=True),
    ]
    m = classification_metrics(outcomes, n_deciles=3)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (4, 2, 1, 3)
    assert (m["n"], m["n_scored"], m["n_failed"]) == (12, 10, 2)
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))
    assert m["balanced_accuracy"] == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert m["recall_per_decile"] == [0.5, 1.0, 0.5]  # the failed decile-3 example is not a miss


def test_failures_are_never_counted_as_wrong():
    right = [O(1, 1, 1), O(0, 0, 0)]
    m = classification_metrics(right + [O(1, 1, failed=True)] * 50, n_deciles=1)
    assert m["accuracy"] == 1.0 and m["n_failed"] == 50 and m["recall"] == 1.0


def test_auroc_from_probabilities_hand_computed():
    # positives 0.9, 0.4; negatives 0.6, 0.1 -> pairs ranked right: (0.9>0.6),(0.9>0.1),(0.4>0.1) = 3 of 4
    outcomes = [O(1, 1, 1, 0.9), O(1, 2, 0, 0.4), O(0, 0, 1, 0.6), O(0, 0, 0, 0.1), O(1, 1, failed=True)]
    m = classification_metrics(outcomes, n_deciles=2)
    assert m["auroc"] == pytest.approx(0.75) and m["n_auroc"] == 4
    # ties count half: one positive and one negative at the same score
    assert classification_metrics([O(1, 1, None, 0.5), O(0, 0, None, 0.5)], 1)["auroc"] == pytest.approx(0.5)


def test_undefined_metrics_are_none_not_zero():
    m = classification_metrics([O(0, 0, 0, 0.2), O(0, 0, 0, 0.3)], n_deciles=2)
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None
    assert m["auroc"] is None and m["balanced_accuracy"] is None
    assert m["accuracy"] == 1.0 and m["recall_per_decile"] == [None, None]
    empty = classification_metrics([O(1, 1, failed=True)], n_deciles=1)
    assert empty["accuracy"] is None and empty["n_failed"] == 1


def test_summary_mean_and_standard_error_over_latents():
    rows = [
        {"accuracy": 0.5, "auroc": None, "n_failed": 1, "n": 10},
        {"accuracy": 0.7, "auroc": 0.9, "n_failed": 0, "n": 10},
        {"accuracy": 0.9, "auroc": 0.7, "n_failed": 2, "n": 10},
    ]
    s = summarise(rows, ["accuracy", "auroc"])
    assert s["accuracy"]["mean"] == pytest.approx(0.7) and s["accuracy"]["n"] == 3
    assert s["accuracy"]["sem"] == pytest.approx(0.2 / math.sqrt(3))
    assert s["auroc"]["mean"] == pytest.approx(0.8) and s["auroc"]["n"] == 2
    assert s["n_failed"] == 3 and s["n_latents"] == 3
