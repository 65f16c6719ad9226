"""Fuzzing: activating excerpts with << >> marks, some on the tokens that fire (label 1), some moved to
tokens that do not (label 0); the scorer says which are marked correctly (the seeds: per decile, 5 of 7
correct, 2 of 7 not; incorrect marks cover as many tokens as correct marks do on average).

Each score row keeps, per outcome, the token positions its excerpt showed marked (`details["marks"]`), so the
TUI's evidence can show which silent tokens a wrongly marked excerpt had marked (the correct marks alone could be
recomputed from the explanation's threshold; the moved ones are random)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autointerp.engine.interpretation.examples import Example, marked_positions, with_marks

from .base import Item
from .protocol import LabelScorer, Scored


@dataclass
class MarkedItem(Item):
    """A fuzzing excerpt and the token positions it shows between << >> (indices into the window's tokens)."""

    marks: tuple[int, ...] = ()


def _marked(window: int, ex: Example, mask: np.ndarray, label: int) -> MarkedItem:
    return MarkedItem(window, with_marks(ex, mask), label, ex.decile, tuple(int(i) for i in np.flatnonzero(mask)))


def fuzzing_items(
    activating: list[Example], threshold: float, incorrect_fraction: float, rng: np.random.Generator
) -> list[Item]:
    masks = [marked_positions(ex, threshold) for ex in activating]
    n_marked = max(1, int(round(np.mean([m.sum() for m in masks])))) if masks else 1
    # round(fraction x all) examples get wrong marks, spread over the deciles as evenly as possible:
    # take the 1st shuffled example of every decile, then the 2nd, ... (per-decile rounding would
    # give none at all with one or two examples per decile).
    rank = np.zeros(len(activating))
    for decile in {ex.decile for ex in activating}:
        idx = [i for i, ex in enumerate(activating) if ex.decile == decile]
        rank[rng.permutation(idx)] = np.arange(len(idx))
    order = np.lexsort((rng.random(len(activating)), rank))
    wrong = {int(i) for i in order[: int(round(incorrect_fraction * len(activating)))]}
    items: list[Item] = []
    for i, (ex, mask) in enumerate(zip(activating, masks)):
        silent = np.flatnonzero(ex.acts <= 0)
        if i in wrong and len(silent):
            fake = np.zeros(len(ex.tokens), bool)
            fake[rng.choice(silent, size=min(n_marked, len(silent)), replace=False)] = True
            items.append(_marked(ex.window, ex, fake, 0))
        else:
            items.append(_marked(ex.window, ex, mask, 1))
    return [items[i] for i in rng.permutation(len(items))]


class Fuzzing(LabelScorer):
    name = "fuzzing"
    evidence = "marks"
    stream = 2

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> list[Item]:
        return fuzzing_items(act, ctx.cfg.explain.threshold, ctx.cfg.score.fuzz_incorrect_fraction, rng)

    async def run(self, ctx, explanation: str, state: list[Item]) -> Scored:
        scored = await super().run(ctx, explanation, state)
        # run.items is aligned with the outcomes (failed ones included): the marks each excerpt was shown with.
        scored.run.details["marks"] = [list(getattr(it, "marks", ())) for it in scored.run.items]
        return scored

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return math.ceil(n_act / cfg.score.examples_per_prompt)
