"""Surprisal: how much the explanation, placed before an excerpt, lowers a base LM's loss on it (the model and
the loss are in engine/interpretation/surprisal.py). No LLM call; the score is the AUROC of the loss decrease."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.surprisal import EMPTY_TEXT, NON_FINITE, BaseLM

from .base import Item, ScoredRun
from .detection import plain_items_state
from .protocol import Needs, Scored, Scorer


class SurprisalScorer(Scorer):
    name = "surprisal"
    stream = 1  # detection's excerpts
    needs = Needs(llm=False, base_lm=True)
    primary_metric = "auroc"

    def check(self, cfg) -> str | None:
        lm = cfg.score.surprisal_model
        if lm not in ("subject", "embedded") and not Path(lm).expanduser().is_file():
            return f"score.surprisal_model {lm!r}: use subject, embedded or the path of a .gguf file"
        return None

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> dict:
        return plain_items_state(act, non, rng)

    async def run(self, ctx, explanation: str, state: dict) -> Scored:
        run = await ctx.off_loop(self._losses, ctx, explanation, state)
        return Scored(
            run,
            ctx.base_lm.name,
            "base-lm",
            ctx.prompts.get("surprisal").sha,
            {"surprisal_model": ctx.cfg.score.surprisal_model},
        )

    def _losses(self, ctx, explanation: str, state: dict) -> ScoredRun:
        prefix = ctx.prompts.get("surprisal").render(explanation=explanation)[-1]["content"] + "\n"
        cache = state["cache"]  # the baseline losses (no prefix), computed once for the explanation and its control
        run, cache["baseline"] = surprisal_run(ctx.base_lm, prefix, state["items"], cache.get("baseline"))
        run.details = {"base_model": ctx.base_lm.name}
        return run


def surprisal_run(
    lm: BaseLM, prefix: str, items: list[Item], baseline: list[float | None] | None = None
) -> tuple[ScoredRun, list[float | None]]:
    """Score one prefix (template + explanation) on items: probability = baseline loss - loss with prefix.

    Returns the run and the baseline losses (prefix ""), so a caller can reuse them for a control prefix.
    """
    texts = [it.text for it in items]
    if baseline is None:
        baseline = lm.losses("", texts)
    if len(baseline) != len(items):
        raise ValueError(f"baseline has {len(baseline)} losses for {len(items)} items")
    with_prefix = lm.losses(prefix, texts)
    run = ScoredRun([], list(items), errors=Counter())
    for it, b, w in zip(items, baseline, with_prefix):
        if b is None or w is None:
            run.errors[EMPTY_TEXT] += 1
            run.outcomes.append(ExampleOutcome(it.label, it.decile, failed=True))
        elif not (math.isfinite(b) and math.isfinite(w)):
            run.errors[NON_FINITE] += 1
            run.outcomes.append(ExampleOutcome(it.label, it.decile, failed=True))
        else:
            run.outcomes.append(ExampleOutcome(it.label, it.decile, prediction=None, probability=b - w))
    return run, baseline
