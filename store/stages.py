"""The names of the stages of work: the `stages` table's rows (whole-file passes) and the latent stages.

Defined once here, the lowest layer, because the store writes and migrates these rows and the engine, the
reports and the TUI read them.
"""

from __future__ import annotations

# Whole-file passes, each a row in `stages` with the fingerprint of what it was done for.
CACHE = "cache"  # a whole cache done: chunks, statistics, vocabulary, directions, filters
CACHE_STATS = "cache.stats"  # per-latent statistics (store/stats.py)
CACHE_FILTERS = "cache.filters"  # positional MI and unigram candidates (store/filters.py)
CACHE_UNIGRAM = "cache.unigram"  # the unigram candidates verified through the subject model

# Per-latent stages, run over a selection of latents (their results are rows of explanations and scores).
EXPLAIN = "explain"
SCORE = "score"
LATENT_STAGES = (EXPLAIN, SCORE)

# What `autointerp batch` runs, in order (config batch.stages, `--redo`).
BATCH_STAGES = (CACHE, EXPLAIN, SCORE)
