"""A small batch config (the embedded default at a size tests can afford), written to a file."""

from __future__ import annotations

import json
from pathlib import Path

from .stand_in_llm import with_stand_in

# 8,192 tokens in 4 chunks, the 2 most frequent latents, few examples.
SMALL = """
db = "{db}"
profile = "cpu"
[batch]
latents = "{latents}"
progress_interval_s = 0.2
stages = {stages}
[cache]
n_tokens = 8192
chunk_tokens = {chunk_tokens}
batch_size = 8
[sample]
activating_per_decile = 1
n_non_activating = 4
[score]
scorers = ["detection", "embedding"]
examples_per_prompt = 5
"""


def write_config(
    path: Path,
    db: Path,
    latents="top:2",
    extra="",
    chunk_tokens=2048,
    stages=("cache", "explain", "score"),
    llm_model: Path | str | None = None,
) -> Path:
    """`llm_model`: the GGUF that explains and judges; the stand-in (helpers/stand_in_llm.py) unless named."""
    path.write_text(
        SMALL.format(db=db, latents=latents, chunk_tokens=chunk_tokens, stages=json.dumps(list(stages)))
        + with_stand_in(extra, llm_model)
    )
    return path
