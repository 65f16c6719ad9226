"""Detection: the scorer reads the explanation and says which plain excerpts it predicts fire the latent."""

from __future__ import annotations

import math

import numpy as np

from autointerp.engine.interpretation.examples import Example, plain

from .base import Item
from .protocol import LabelScorer


def detection_items(activating: list[Example], non_activating: list[Example], rng: np.random.Generator) -> list[Item]:
    items = [Item(ex.window, plain(ex), 1, ex.decile) for ex in activating]
    items += [Item(ex.window, plain(ex), 0, 0) for ex in non_activating]
    return [items[i] for i in rng.permutation(len(items))]


def plain_items_state(activating: list[Example], non_activating: list[Example], rng: np.random.Generator) -> dict:
    """What detection, embedding and surprisal prepare (from the same stream, so the same excerpts): the shuffled
    plain excerpts, and a cache of what the explanation and its control share (embeddings, baseline losses)."""
    return {"items": detection_items(activating, non_activating, rng), "cache": {}}


class Detection(LabelScorer):
    name = "detection"
    stream = 1

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> dict:
        return plain_items_state(act, non, rng)

    def items(self, state: dict) -> list[Item]:
        return state["items"]

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return math.ceil((n_act + n_non) / cfg.score.examples_per_prompt)
