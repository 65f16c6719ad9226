"""The latent list's query language: `column op number` filters (`detection<0.6`, `frequency>=0.001`,
`detection-control>0.1`) and full-text search words, as the browser's query box takes them."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import UserError

STAT_COLUMNS = ("latent", "frequency", "max_act", "mean_act", "n_windows", "count")
# `detection-control`, `detection.auroc-control`: the real score minus the control's (another latent's
# explanation scored on this latent's examples) for the same latent, explainer and scorer: the margin that matters.
CONTROL_SUFFIX = "-control"


class BrowseError(UserError):
    """The file cannot be browsed, or the query cannot be read; the message is one line for the user."""


@dataclass(frozen=True)
class ScoreFilter:
    """`column op value`, e.g. detection < 0.6 or frequency >= 0.001."""

    column: str
    op: str
    value: float


FILTER_OPS = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "=": np.equal}


def column_array(cursor, dtype) -> np.ndarray:
    """One-column rows as an array, without a Python list in between."""
    return np.fromiter((r[0] for r in cursor), dtype=dtype)


def parse_query(text: str, columns: set[str]) -> tuple[list[ScoreFilter], str]:
    """Split the browser's query box into filters (`name<op>number`) and full-text search words.

    Raises BrowseError naming an unknown column, so a typo never silently filters nothing.
    """
    filters, words = [], []
    for term in text.split():
        m = re.fullmatch(r"([A-Za-z_][\w.]*(?:-control)?)(<=|>=|<|>|=)(-?[\d.]+(?:e-?\d+)?)", term)
        if m is None:
            words.append(term)
            continue
        name, op, value = m.groups()
        if name not in columns:
            raise BrowseError(f"unknown column {name!r} in filter {term!r}; known: {', '.join(sorted(columns))}")
        filters.append(ScoreFilter(name, op, float(value)))
    return filters, " ".join(words)


def fts_query(words: str) -> str:
    """User words as an FTS5 query: each word quoted (no syntax errors from text), the last one a prefix."""
    terms = ['"' + w.replace('"', '""') + '"' for w in words.split()]
    if terms:
        terms[-1] += "*"
    return " ".join(terms)
