"""Detection: the scorer reads the explanation and says which plain excerpts it predicts fire the latent."""

from __future__ import annotations

import numpy as np

from autointerp.engine.interpretation.examples import Example, plain

from .base import Item


def detection_items(activating: list[Example], non_activating: list[Example], rng: np.random.Generator) -> list[Item]:
    items = [Item(ex.window, plain(ex), 1, ex.decile) for ex in activating]
    items += [Item(ex.window, plain(ex), 0, 0) for ex in non_activating]
    return [items[i] for i in rng.permutation(len(items))]
