"""What a scorer sees of the Interpreter (scorers/protocol.py's ScorerContext): the settings, the prompts, the
backend, the lazily loaded models, the LLM call with its outage retries and the store's worker thread."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .interpret import Interpreter
    from .llm import LLMRequest, LLMResponse


class InterpreterContext:
    def __init__(self, interp: Interpreter):
        self._interp = interp

    # Read through, not copied: the models load on first use, and bench_llm changes cfg.score between stages.
    @property
    def cfg(self):
        return self._interp.cfg

    @property
    def prompts(self):
        return self._interp.prompts

    @property
    def backend(self):
        return self._interp.backend

    @property
    def json_output(self) -> bool:
        return self._interp.json_output

    @property
    def n_deciles(self) -> int:
        return self._interp.sample_cfg.n_deciles

    @property
    def embedder(self):
        return self._interp.embedder

    @property
    def base_lm(self):
        return self._interp.base_lm

    @property
    def probe(self):
        return self._interp.probe

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list:
        return self._interp.steering_effects(latent, role, targets)

    async def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        return await self._interp._complete(requests)

    async def off_loop(self, fn: Callable, *args):
        return await self._interp._off_loop(fn, *args)

    def settings(self, **more) -> dict:
        return self._interp._settings(**more)
