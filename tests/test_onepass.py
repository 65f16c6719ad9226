"""One pass on a real cache: the statistics, filter rows and co-activation sketches the cache stage's compaction
wrote equal those of the separate passes over the same segments (what a file compacted before the one pass gets)."""

import sqlite3

import numpy as np
from helpers.databases import copy_db

from autointerp.engine.config import CacheConfig
from autointerp.store.db import ActivationStore
from autointerp.store.filters import FilterSettings, compute_filters
from autointerp.store.sketches import band_sketch_from_segments, load_sketches
from autointerp.store.stats import compute_latent_stats

DERIVED = ("latents", "latent_filters", "columns")


def derived(path) -> dict:
    with sqlite3.connect(path) as c:
        out = {t: c.execute(f"select * from {t} order by 1").fetchall() for t in DERIVED}
        out["stages"] = c.execute(
            "select name, fingerprint, detail from stages where name in ('cache.stats', 'cache.filters') order by name"
        ).fetchall()
    return out


def test_a_real_cache_compacted_in_one_pass_holds_the_rows_of_the_separate_passes(real_cache_db, tmp_path):
    cfg = CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8)  # real_cache_db's settings
    one = derived(real_cache_db)
    assert len(one["latents"]) == len(one["latent_filters"]) > 0
    with sqlite3.connect(real_cache_db) as c:
        assert c.execute("select count(*) from coactivation_sketches").fetchone()[0] > 0  # stored by compaction
    # The same file as one compacted before the one pass: no statistics, filters or sketches; the passes that
    # ran before it (and still run for such a file) compute them from the segments.
    old = tmp_path / "old.db"
    copy_db(real_cache_db, old)
    with sqlite3.connect(old) as c:
        for t in ("latents", "latent_filters", "columns", "coactivation_sketches"):
            c.execute(f"delete from {t}")
        c.execute("delete from stages where name in ('cache.stats', 'cache.filters')")
    with ActivationStore.open(old) as store:
        assert compute_latent_stats(store, cfg.window_len) == store.provenance["num_latents"]
        assert compute_filters(store, FilterSettings.of(cfg)) == store.provenance["num_latents"]
        rebuilt = np.concatenate(
            [
                band_sketch_from_segments(store, b, cfg.window_len)
                for b in range(-(-store.provenance["num_latents"] // 4096))
            ]
        )
    assert derived(old) == one
    with ActivationStore.open(real_cache_db, readonly=True) as store:
        stored = load_sketches(store, cfg.window_len)
    np.testing.assert_array_equal(stored, rebuilt)
    assert (stored != 0xFFFFFFFF).any()
