"""Running one explain/score stage, or one backend call, the way the commands do, for fault tests."""

from __future__ import annotations

import asyncio
import dataclasses

from autointerp.store.db import ActivationStore


def share_subject(interp, subject_model):
    """An Interpreter using the session's subject model instead of loading its own."""
    interp.resources.use_subject(subject_model)
    return interp


def score_by_generation(cfg, db, latents, subject_model, n_texts: int) -> None:
    """Score `latents` with generation alone through the real backend of `cfg` (its texts run through the
    session's subject model): the scorer the scripted server cannot answer."""
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.llm import make_backend

    generation = dataclasses.replace(cfg, score=dataclasses.replace(cfg.score, scorers=["generation"]))
    generation.score.generation_texts = n_texts
    backend = make_backend(generation.llm)
    with ActivationStore.open(db) as store:
        interp = share_subject(Interpreter(generation, store, backend), subject_model)
        try:
            asyncio.run(interp.run_stage("score", list(latents)))
        finally:
            interp.close()
            asyncio.run(backend.aclose())


def write_stand_in_explanation(results, latent: int, text: str) -> None:
    """An explanation written directly (no LLM call): for tests about scoring, not explaining."""
    results.write_explanation(
        {
            "latent": latent,
            "explainer": "default",
            "text": text,
            "n_calls": 0,
            "n_failed_calls": 0,
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "output_tokens": 0,
            "llm_seconds": 0.0,
        }
    )


FAULT_SAMPLE_SIZES = dict(n_explain=6, activating_per_decile=1, n_non_activating=10, min_windows=20)


def llm_stage_config(db, urls, *, wait: float = 5.0, scorers=("detection",), **llm):
    """A config for explain/score over HTTP with few examples, one excerpt per prompt and no client retries."""
    from autointerp.engine.config import BatchConfig, Config, LLMConfig, SampleConfig, ScoreConfig

    kw = dict(
        backend="openai",
        model="fake",
        base_urls=list(urls),
        max_retries=0,
        timeout_s=5.0,
        max_concurrency=2,
        top_logprobs=0,
    )
    kw.update(llm)
    return Config(
        db=str(db),
        sample=SampleConfig(**FAULT_SAMPLE_SIZES),
        score=ScoreConfig(scorers=list(scorers), examples_per_prompt=1),
        llm=LLMConfig(**kw),
        batch=BatchConfig(outage_wait_s=wait),
    )


def run_llm_stage(cfg, stage: str, latents: list[int], redo: bool = False):
    """One explain or score stage in this process (real store, real HTTP backend); returns its StageTally."""
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.llm import make_backend

    store = ActivationStore.open(cfg.db)
    backend = make_backend(cfg.llm)
    interp = Interpreter(cfg, store, backend)

    async def go():
        try:
            return await interp.run_stage(stage, latents, redo)
        finally:
            await backend.aclose()

    try:
        return asyncio.run(go())
    finally:
        interp.close()
        store.close()


def explain_and_score(cfg, selection: str) -> list[int]:
    """The latents `selection` picks in cfg.db, explained and then scored by cfg's scorers (each stage as
    `run_llm_stage` runs it) -> those latents."""
    from autointerp.engine.interpretation.interpret import Interpreter

    with ActivationStore.open(cfg.db) as store:
        interp = Interpreter(cfg, store, None)
        latents = interp.select(selection)
        interp.close()
    run_llm_stage(cfg, "explain", latents)
    run_llm_stage(cfg, "score", latents)
    return latents


def complete_and_close(backend, requests):
    """One `complete_many` on a fresh event loop, closing the backend after."""

    async def go():
        try:
            return await backend.complete_many(requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())
