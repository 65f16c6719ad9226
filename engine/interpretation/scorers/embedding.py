"""Embedding: how close the explanation's sentence embedding is to each excerpt's. No LLM call; the
similarity is the score, so the metric is AUROC (activating vs non-activating excerpts)."""

from __future__ import annotations

from autointerp.engine.interpretation.embedding import Embedder
from autointerp.engine.interpretation.metrics import ExampleOutcome

from .base import Item, ScoredRun


def embedding_run(embedder: Embedder, explanation: str, items: list[Item], item_vectors=None) -> ScoredRun:
    """`item_vectors`: the items' embeddings when already computed (the control reuses them)."""
    vecs = embedder.encode([it.text for it in items]) if item_vectors is None else item_vectors
    query = embedder.encode([explanation])[0]
    sims = vecs @ query
    return ScoredRun([ExampleOutcome(it.label, it.decile, None, float(s)) for it, s in zip(items, sims)], list(items))
