"""The stage's LLM as explainers and scorers call it: every call waits out the stage's outage (calls that found no
server are sent again), and every answer is recorded with what it depended on besides its prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .outage import Outage, complete_answered

if TYPE_CHECKING:
    from autointerp.engine.config import Config

    from .llm import LLMBackend, LLMRequest, LLMResponse


class LLMCalls:
    def __init__(self, cfg: Config, backend: LLMBackend | None):
        self.cfg, self.backend = cfg, backend
        self.json_output = backend is None or backend.json_output  # ask for JSON by schema, or read free text
        self.outage = Outage(cfg.batch.outage_wait_s)  # replaced by each stage with one that logs its events

    async def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """One response per request; calls that found no server are retried through the stage's outage pause."""
        assert self.backend is not None, "LLM calls need a backend"
        return await complete_answered(self.backend, self.outage, requests)

    def settings(self, **more) -> dict:
        """What an answer depended on besides the prompt and the examples (recorded with every row)."""
        llm = self.cfg.llm
        return {
            "llm_seed": llm.seed,
            "temperature": llm.temperature,
            "top_logprobs": llm.top_logprobs,
            "json_output": self.json_output,
            "profile": self.cfg.profile,
            **(self.backend.describe() if self.backend else {}),
            **more,
        }
