"""Embedding: how close the explanation's sentence embedding is to each excerpt's. No LLM call; the
similarity is the score, so the metric is AUROC (activating vs non-activating excerpts)."""

from __future__ import annotations

from autointerp.engine.interpretation.embedding import Embedder
from autointerp.engine.interpretation.metrics import ExampleOutcome

from .base import Item, ScoredRun
from .detection import plain_items_state
from .protocol import Needs, Scored, Scorer


def embedding_run(embedder: Embedder, explanation: str, items: list[Item], item_vectors=None) -> ScoredRun:
    """`item_vectors`: the items' embeddings when already computed (the control reuses them)."""
    vecs = embedder.encode([it.text for it in items]) if item_vectors is None else item_vectors
    query = embedder.encode([explanation])[0]
    sims = vecs @ query
    return ScoredRun([ExampleOutcome(it.label, it.decile, None, float(s)) for it, s in zip(items, sims)], list(items))


class EmbeddingScorer(Scorer):
    name = "embedding"
    stream = 1  # detection's excerpts
    needs = Needs(llm=False, embedder=True)
    primary_metric = "auroc"

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> dict:
        return plain_items_state(act, non, rng)

    async def run(self, ctx, explanation: str, state: dict) -> Scored:
        items, cache = state["items"], state["cache"]
        if "vectors" not in cache:  # the excerpts' embeddings, computed once for the explanation and its control
            cache["vectors"] = await ctx.off_loop(ctx.embedder.encode, [it.text for it in items])
        run = await ctx.off_loop(embedding_run, ctx.embedder, explanation, items, cache["vectors"])
        return Scored(
            run, ctx.embedder.name, "sentence-transformers", "", {"embedding_model": ctx.cfg.score.embedding_model}
        )
