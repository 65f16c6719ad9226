"""Fuzzing: activating excerpts with << >> marks, some on the tokens that fire (label 1), some moved to
tokens that do not (label 0); the scorer says which are marked correctly (the seeds: per decile, 5 of 7
correct, 2 of 7 not; incorrect marks cover as many tokens as correct marks do on average)."""

from __future__ import annotations

import math

import numpy as np

from autointerp.engine.interpretation.examples import Example, marked_positions, with_marks

from .base import Item
from .protocol import LabelScorer


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
    items = []
    for i, (ex, mask) in enumerate(zip(activating, masks)):
        silent = np.flatnonzero(ex.acts <= 0)
        if i in wrong and len(silent):
            fake = np.zeros(len(ex.tokens), bool)
            fake[rng.choice(silent, size=min(n_marked, len(silent)), replace=False)] = True
            items.append(Item(ex.window, with_marks(ex, fake), 0, ex.decile))
        else:
            items.append(Item(ex.window, with_marks(ex, mask), 1, ex.decile))
    return [items[i] for i in rng.permutation(len(items))]


class Fuzzing(LabelScorer):
    name = "fuzzing"
    stream = 2

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> list[Item]:
        return fuzzing_items(act, ctx.cfg.explain.threshold, ctx.cfg.score.fuzz_incorrect_fraction, rng)

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return math.ceil(n_act / cfg.score.examples_per_prompt)
