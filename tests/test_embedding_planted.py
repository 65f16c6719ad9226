"""A planted latent: the embedding scorer must rank its true explanation above the random control.

The store is made by the real store code from real text tokenized by the embedded model's tokenizer;
latent k fires on the sentences of topic k. The embedding model is the real all-MiniLM-L6-v2.
"""

import asyncio

import pytest
from helpers.planted import build_planted_store

from autointerp.engine.config import Config, SampleConfig, ScoreConfig
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.store.db import ActivationStore


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory):
    return build_planted_store(tmp_path_factory.mktemp("planted"))


def test_true_explanation_beats_the_random_control(planted_db):
    cfg = Config(
        db=str(planted_db),
        sample=SampleConfig(n_explain=4, activating_per_decile=1, n_deciles=5, n_non_activating=15, min_windows=5),
        score=ScoreConfig(scorers=["embedding"]),
    )
    with ActivationStore.open(planted_db) as store:
        interp = Interpreter(cfg, store, backend=None)
        tally = asyncio.run(interp.run_stage("score", [0, 1, 2]))
        assert tally.done == 3 and tally.failed == 0
        rows = {(r["latent"], r["control"]): r for r in interp.results.scores()}
        interp.close()
    for k in range(3):
        real, control = rows[(k, 0)], rows[(k, 1)]
        assert control["explanation_latent"] != k
        assert real["n"] == 20 and real["n_auroc"] == 20  # 5 activating + 15 non-activating, none failed
        assert real["auroc"] >= 0.95, real
        assert real["auroc"] > control["auroc"] + 0.3, (real["auroc"], control["auroc"])


def test_excerpt_order_does_not_depend_on_which_other_scorers_run(planted_db):
    sample = SampleConfig(n_explain=4, activating_per_decile=1, n_deciles=5, n_non_activating=15, min_windows=5)
    drawn = []
    for scorers in (["detection"], ["fuzzing", "embedding", "detection"]):
        cfg = Config(db=str(planted_db), sample=sample, score=ScoreConfig(scorers=scorers))
        with ActivationStore.open(planted_db) as store:
            interp = Interpreter(cfg, store, backend=None)
            (todo, items, seed, _, _), _ = interp._prepare_score(1, redo=True)
            drawn.append([(it.window, it.label, it.text) for it in items["detection"]["items"]])
            interp.close()
    assert drawn[0] == drawn[1] and len(drawn[0]) == 20
