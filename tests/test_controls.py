"""The random-explanation control: another explained latent's explanation, drawn by (seed, latent)."""

import numpy as np
from helpers.databases import copy_db
from helpers.llm_stage import write_stand_in_explanation

from autointerp.engine.config import Config
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.store.db import ActivationStore


def test_the_control_is_the_seeded_draw_among_the_other_explained_latents(real_cache_db, tmp_path):
    """control_for picks in O(log n) what rng.choice over the explained latents less the latent itself picks (the
    draw every stored control was made with), for latents that are explained and latents that are not."""
    db = copy_db(real_cache_db, tmp_path / "c.db")
    explained = sorted(int(x) for x in np.random.default_rng(5).choice(3072, size=200, replace=False))
    with ActivationStore.open(db) as store:
        for latent in explained:
            write_stand_in_explanation(store.results, latent, f"text {latent}")
        interp = Interpreter(Config(db=str(db)), store, None)
        try:
            asked = explained[:60] + [x for x in range(0, 3072, 37) if x not in explained]
            for latent in asked:
                others = np.array([x for x in explained if x != latent])
                want = int(np.random.default_rng([interp.sample_cfg.seed, latent, 0xC0]).choice(others))
                assert interp.control_for(latent) == (want, f"text {want}"), latent
        finally:
            interp.close()


def test_no_control_without_another_explained_latent(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "one.db")
    with ActivationStore.open(db) as store:
        write_stand_in_explanation(store.results, 7, "the only one")
        interp = Interpreter(Config(db=str(db)), store, None)
        try:
            assert interp.control_for(7) is None
            assert interp.control_for(8) == (7, "the only one")
        finally:
            interp.close()
