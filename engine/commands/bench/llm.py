"""`autointerp bench llm`: LLM throughput and prefix-cache reuse of explain + score, measured in one run.

- prompts_per_s: LLM prompts answered per second of wall time (explain + the scorers)
- prompt_tokens_total / prompt_tokens_cached / cache_hit_ratio: prompt tokens sent, and the share the
  backend served from its prefix cache (overall, and per stage / scorer in `stages`)
- backend_s: time inside the backend (sum of call latencies; calls never overlap in-process)
- wall_s: wall time of all stages; overhead = wall_s / backend_s - 1 is what the pipeline adds
  (sampling, window fetches, prompt building, parsing, SQLite writes, and for intervention, generation and
  surprisal the subject/base model's own passes) on top of the LLM
- stages[name]: per stage and scorer (each scorer runs as its own stage): prompts, prompt and output tokens
  per latent, backend seconds, wall seconds and seconds per latent (the README's cost table)
Scorers: detection and fuzzing unless `scorers` names others (embedding and surprisal make no LLM call;
their seconds per latent are still measured).
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path

from autointerp.engine.config import CacheConfig, Config
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.llm import make_backend
from autointerp.store.db import ActivationStore


def _stage_figures(rows: list[dict]) -> dict:
    prompts = sum(r["n_calls"] for r in rows)
    total = sum(r["prompt_tokens"] for r in rows)
    cached = sum(max(r["cached_tokens"], 0) for r in rows)
    return {
        "prompts": prompts,
        "prompt_tokens": total,
        "prompt_tokens_cached": cached,
        "cache_hit_ratio": cached / total if total else None,
        "output_tokens": sum(r["output_tokens"] for r in rows),
        "backend_s": sum(r["llm_seconds"] for r in rows),
        "prompt_tokens_per_latent": total / max(len({r["latent"] for r in rows}), 1),
    }


def bench_llm(
    cfg: Config, db: str | None = None, n_latents: int = 4, cache_tokens: int = 16_384, scorers: list[str] | None = None
) -> dict:
    """Explain once, then score with each scorer in its own timed stage (so seconds per latent are each
    scorer's own, steering and base-model passes included)."""
    scorers = list(scorers or ["detection", "fuzzing"])
    workdir = Path(tempfile.mkdtemp(prefix="autointerp-bench-llm-"))
    if db is None:
        from autointerp.engine.activations.cache import run_cache

        db = str(workdir / "bench.db")
        run_cache(CacheConfig(n_tokens=cache_tokens, chunk_tokens=8192), db)
    else:  # results go to a copy: the benchmark never writes into the user's database
        import shutil

        db = str(shutil.copy(db, workdir / "bench.db"))
    cfg = dataclasses.replace(cfg, db=db, score=dataclasses.replace(cfg.score, scorers=scorers))
    backend = make_backend(cfg.llm)
    store = ActivationStore.open(db)
    interp = Interpreter(cfg, store, backend)
    latents = interp.select(f"top:{n_latents}")
    walls: dict[str, float] = {}

    async def run() -> None:
        t = time.perf_counter()
        await interp.run_stage("explain", latents, redo=True)
        walls["explain"] = time.perf_counter() - t
        for scorer in scorers:
            interp.cfg.score.scorers = [scorer]
            t = time.perf_counter()
            await interp.run_stage("score", latents, redo=True)
            walls[scorer] = time.perf_counter() - t

    try:
        asyncio.run(run())
        explanations = [interp.results.explanation(x, interp.spec.name) for x in latents]
        scores = [r for r in interp.results.scores() if r["latent"] in set(latents)]
    finally:
        interp.close()
        asyncio.run(backend.aclose())
        store.close()
    stages = {"explain": _stage_figures([e for e in explanations if e])}
    for scorer in scorers:
        stages[scorer] = _stage_figures([r for r in scores if r["scorer"] == scorer])
    n = max(len(latents), 1)
    for name, st in stages.items():
        st["wall_s"] = walls[name]
        st["seconds_per_latent"] = walls[name] / n
        st["output_tokens_per_latent"] = st["output_tokens"] / n
    wall = sum(walls.values())
    everything = _stage_figures([e for e in explanations if e] + scores)
    return {
        "backend": backend.name,
        "model": backend.model,
        "profile": interp.cfg.profile,
        "examples_per_prompt": interp.cfg.score.examples_per_prompt,
        "latents": len(latents),
        "scorers": scorers,
        "prompts_per_s": everything["prompts"] / wall,
        "prompt_tokens_total": everything["prompt_tokens"],
        "prompt_tokens_cached": everything["prompt_tokens_cached"],
        "cache_hit_ratio": everything["cache_hit_ratio"],
        "output_tokens_total": everything["output_tokens"],
        "backend_s": everything["backend_s"],
        "wall_s": wall,
        "overhead": wall / everything["backend_s"] - 1 if everything["backend_s"] else None,
        "failed_explanations": sum(1 for e in explanations if e and e["text"] is None),
        "failed_examples": sum(r["n_failed"] for r in scores),
        "stages": stages,
    }
