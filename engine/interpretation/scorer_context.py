"""What explainers and scorers see of a stage (explainers' ExplainerContext, scorers/protocol.py's ScorerContext):
the loaded models and the store's excerpts (Resources), the LLM call (LLMCalls), and the store's worker thread."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from autointerp.store.results import SampleSet

    from .examples import Example
    from .llm import LLMRequest, LLMResponse
    from .llm_calls import LLMCalls
    from .resources import Resources


class StageContext:
    def __init__(self, resources: Resources, llm: LLMCalls, worker: Executor):
        self.resources, self.llm, self.worker = resources, llm, worker

    # Read through, not copied: the models load on first use, and bench_llm changes cfg.score between stages.
    @property
    def cfg(self):
        return self.resources.cfg

    @property
    def prompts(self):
        return self.resources.prompts

    @property
    def backend(self):
        return self.llm.backend

    @property
    def json_output(self) -> bool:
        return self.llm.json_output

    @property
    def n_deciles(self) -> int:
        return self.resources.cfg.sample.n_deciles

    @property
    def embedder(self):
        return self.resources.embedder

    @property
    def base_lm(self):
        return self.resources.base_lm

    @property
    def probe(self):
        return self.resources.probe

    def role_examples(self, sample_set: SampleSet, role: str) -> list[Example]:
        return self.resources.role_examples(sample_set, role)

    def max_activation(self, latent: int) -> float:
        return self.resources.max_activation(latent)

    def promoted_tokens(self, latent: int) -> list[str]:
        return self.resources.promoted_tokens(latent)

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list:
        return self.resources.steering_effects(latent, role, targets)

    async def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        return await self.llm.complete(requests)

    async def off_loop(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    def settings(self, **more) -> dict:
        return self.llm.settings(**more)
