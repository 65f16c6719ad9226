"""What the browser hands its readers (the TUI, `autointerp bench tui`): plain values read from the file, one
dataclass per view (a row of the latent list, one latent's detail, a score histogram, the run monitor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from .queries import LatentWindow


@dataclass
class LatentRow:
    latent: int
    frequency: float | None
    max_act: float | None
    n_windows: int | None
    explanation: str | None
    metrics: dict[str, float | None]


@dataclass
class ExampleGroup:
    decile: int  # 10 = strongest tenth of the activating windows
    low: float
    high: float
    windows: list[LatentWindow]
    roles: list[str]  # per window: "explain" / "activating" / "non_activating" (its role in the sample set) or ""


@dataclass
class LatentDetail:
    latent: int
    stats: dict | None
    explanations: list[dict]
    scores: list[dict]  # one per (explainer, scorer): real and control metrics side by side
    promoted: list[tuple[str, float]]
    suppressed: list[tuple[str, float]]
    neighbours: list[tuple[int, float, str | None]]  # latent, decoder cosine, its explanation
    groups: list[ExampleGroup]
    audits: list[dict]  # every rater's audit row of the latent (all explainers), by explainer then rater
    has_vocab: bool
    load_ms: float = 0.0
    # The vocabulary the windows were read with (shared, not copied): the detail renders its tokens without
    # going back to the database, so a view on the UI thread never touches the worker's connection.
    vocab: list[str] = field(default_factory=list, repr=False)
    # Its best and matched latent in another database (the newest `autointerp similarity` run), or None.
    similar: dict | None = None
    # Its latent_filters row (positional MI, unigram tokens and verification) or None where never computed.
    filters: dict | None = None
    # Best-of-N: every candidate explanation drawn, per explainer, in draw order (empty for single draws).
    candidates: list[dict] = field(default_factory=list)

    def token_text(self, ids) -> list[str]:
        return tokens_as_text(self.vocab, ids)

    def audit_of(self, rater: str, explainer: str) -> dict | None:
        """One rater's audit row of this latent's explanation by `explainer` (None: they have not touched it)."""
        return next((a for a in self.audits if a["rater"] == rater and a["explainer"] == explainer), None)


@dataclass
class ScoreHistogram:
    """One scorer's primary metric over latents: real explanations and the random control on the same edges."""

    scorer: str
    metric: str
    edges: np.ndarray  # bins + 1 ascending values
    real: np.ndarray  # latents per bin
    control: np.ndarray


@dataclass
class MonitorSnapshot:
    runs: list[dict]
    events: list[dict]
    cache: dict  # chunks committed, tokens cached, latents with statistics
    counts: dict  # explanations, failed explanations, scored latents
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    workers: list[dict] = field(default_factory=list)  # the newest run's workers (store/runs.py worker_rows)


def tokens_as_text(vocab: list[str], ids) -> list[str]:
    """Token ids as their vocabulary strings; `<id>` for ids the vocabulary lacks (or with no vocabulary)."""
    return [vocab[i] if 0 <= i < len(vocab) else f"<{i}>" for i in (int(t) for t in ids)]
