"""Agreement statistics of ratings, pure maths (no SQL): Spearman's rho, Cohen's kappa, Krippendorff's alpha.

Here, in store/, because the TUI shows rater agreement and imports only store/ (store/audits.py reads the ratings
and calls these); the engine's report reaches them through the same audits functions.
"""

from __future__ import annotations

import math
import warnings

import numpy as np


def finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho; None with fewer than 3 pairs or no spread on either side."""
    if len(x) < 3:
        return None
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.std() == 0 or ya.std() == 0:
        return None
    from scipy.stats import spearmanr  # lazily: only the audit view and the report need scipy

    return float(spearmanr(xa, ya).statistic)


def cohen_kappa(a: list[str], b: list[str], labels: list[str], min_shared: int) -> float | None:
    """Unweighted Cohen's kappa of two raters' ratings (out of `labels`) of the same items; None under `min_shared`
    items, or when chance agreement is 1 (both gave one and the same rating throughout)."""
    if len(a) < min_shared or len(set(a) | set(b)) == 1:  # one rating throughout: kappa is 0/0
        return None
    from sklearn.metrics import cohen_kappa_score  # lazily: only agreement between raters needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an undefined kappa warns and gives nan, turned into None below
        value = float(cohen_kappa_score(a, b, labels=labels))
    return finite(value)


def ordinal_alpha(matrix: np.ndarray, domain: list[int], min_shared: int) -> float | None:
    """Krippendorff's alpha at the ordinal level over a raters x items matrix of ranks out of `domain` (NaN: not
    rated by that rater). Only items with two or more ratings are pairable; None with fewer than `min_shared` of
    them or no spread among their ratings."""
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if pairable.sum() < min_shared:
        return None
    values = matrix[:, pairable]
    if len(np.unique(values[~np.isnan(values)])) < 2:  # every rating the same: expected disagreement is 0
        return None
    import krippendorff  # lazily: only agreement between raters needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = krippendorff.alpha(reliability_data=values, value_domain=domain, level_of_measurement="ordinal")
    return finite(value)
