"""The one interface every explainer/scorer LLM is used through, and what each call records.

A backend takes a list of requests and returns one response per request, in order. It never raises for
a single failed call: the response carries `error` and the caller counts it as a failure (never as a
wrong answer). Only problems that make the backend unusable (a missing GGUF, a bad setting) raise
`LLMConfigError` when the backend is made.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence


class LLMConfigError(Exception):
    """A backend that cannot be started, stated in one line."""


@dataclass
class LLMRequest:
    messages: list[dict]  # chat messages: {"role": "system" | "user" | "assistant", "content": str}
    max_tokens: int = 64
    temperature: float = 0.0
    json_schema: dict | None = None  # constrain the answer to this JSON schema where the backend can
    top_logprobs: int = 0  # >0: return this many alternatives (with log-probabilities) per generated token
    seed: int | None = None


@dataclass
class TokenLogprob:
    token: str  # the generated token's text
    logprob: float  # its log-probability (nan where the backend did not say)
    top: dict[str, float] = field(default_factory=dict)  # alternatives at this position: text -> logprob


@dataclass
class LLMResponse:
    text: str | None = None
    error: str | None = None  # set when the call failed after retries; text is then None
    prompt_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens served from a prefix cache (None: backend does not say)
    output_tokens: int = 0
    latency_s: float = 0.0  # time inside the backend for this call
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    # The backend could not be reached or was overloaded (refused, timed out, 5xx, 429) after its retries:
    # a batch pauses and retries instead of storing the failure.
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class LLMBackend(abc.ABC):
    """An LLM that answers chat requests. Implementations: llamacpp, openai (HTTP), vllm."""

    name: str  # "llamacpp" | "openai" | "vllm"
    model: str  # what it runs, for provenance (never a secret)

    @abc.abstractmethod
    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Answer every request; one response each, in order. Requests sharing a prefix should be
        passed together and in order: in-process backends run them back to back (KV-cache reuse),
        HTTP backends send them concurrently (the server's prefix cache serves the shared part)."""

    async def complete(self, request: LLMRequest) -> LLMResponse:
        return (await self.complete_many([request]))[0]

    async def aclose(self) -> None:
        """Release the model / connections."""

    def describe(self) -> dict:
        """What to record beside results: backend and model, never keys."""
        return {"backend": self.name, "model": self.model}
