"""The one interface every explainer/scorer LLM is used through, and what each call records.

A backend takes a list of requests and returns one response per request, in order. It never raises for
a single failed call: the response carries `error` and the caller counts it as a failure (never as a
wrong answer). Only problems that make the backend unusable (a missing GGUF, a bad setting) raise
`LLMConfigError` when the backend is made.
"""

from __future__ import annotations

import abc
import functools
import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from autointerp.store.errors import UserError

if TYPE_CHECKING:
    from autointerp.engine.config import LLMConfig

# The latent whose calls the running task makes (set per latent by the stage): a replica pool shows it per replica.
CURRENT_LATENT: ContextVar[int | None] = ContextVar("autointerp_current_latent", default=None)


class LLMConfigError(UserError):
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
    # A transient failure: no replica could be reached or answered in time (refused, timed out, 5xx, 429) after
    # the retries and the failover. Never an outcome: the caller pauses and sends the request again.
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        """The call as a DEBUG log line tells it: latency and tokens, or why it failed (never the text)."""
        if self.error is not None:
            return f"failed after {self.latency_s:.2f}s{' (unavailable)' if self.unavailable else ''}: {self.error}"
        cached = f" ({self.cached_tokens} cached)" if self.cached_tokens is not None else ""
        return (
            f"{self.latency_s:.2f}s, {self.prompt_tokens} prompt tokens{cached}, {self.output_tokens} output "
            f"tokens, finish {self.finish_reason}"
        )


# Answers are stored for inspection; past this many characters the rest is cut (a runaway or hostile server
# must not grow the database by megabytes per call).
MAX_STORED_ANSWER_CHARS = 4000


def stored_answer(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_ANSWER_CHARS:
        return text
    return text[:MAX_STORED_ANSWER_CHARS] + f" [... {len(text) - MAX_STORED_ANSWER_CHARS:,} more characters not stored]"


NOT_JSON = object()  # what `answer_json` returns for text that is not JSON


def answer_json(text: str):
    """An answer parsed as JSON (raw control characters inside strings allowed), or NOT_JSON. Never raises: a
    number of thousands of digits (ValueError) or deeply nested brackets (RecursionError) is just not JSON."""
    try:
        return json.loads(text, strict=False)
    except (ValueError, RecursionError):
        return NOT_JSON


def never_raises(failure):
    """Decorate an answer parser so that any exception becomes its failure value, `failure(why)`: an LLM's
    answer is data, and no answer may stop a stage (a failed parse is a counted failure, never a crash)."""

    def wrap(parse):
        @functools.wraps(parse)
        def guarded(*args, **kwargs):
            try:
                return parse(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - whatever the text held, it is one unparseable answer
                return failure(f"unparseable answer ({type(e).__name__})")

        return guarded

    return wrap


class LLMBackend(abc.ABC):
    """An LLM that answers chat requests. Implementations: one module each, named in llm/__init__.py's BACKENDS.

    What the stage asks of a backend is asked of these attributes and methods, never of its name: a new backend
    keeps the defaults or sets its own."""

    name: str  # its name in the registry (llm/__init__.py BACKENDS) and in the config's llm.backend
    model: str  # what it runs, for provenance (never a secret)
    in_process: bool = True  # the model runs in this process (a Ray replica of it); False: behind llm.base_urls
    threads_from_config: bool = False  # takes llm.n_threads (0: every core; a Ray replica gets the CPUs Ray gave it)
    # Set per instance where the config decides them:
    on_cpu: bool = False  # the model runs on this machine's CPU (the `auto` profile then picks `cpu` for "embedded")
    json_output: bool = True  # requests carry their JSON schema; False: answers are free text, parsed as such
    parallel_latents: int = 1  # latents whose calls it answers at once (the stage keeps one more preparing)

    @abc.abstractmethod
    def __init__(self, cfg: LLMConfig) -> None:
        """A registered backend is made from the LLM settings alone (llm/__init__.py's make_backend)."""

    @classmethod  # noqa: B027 (optional: a backend with nothing to check keeps it)
    def check_config(cls, cfg: LLMConfig) -> None:
        """What can be told wrong with the LLM settings without loading a model or calling a server (raises
        LLMConfigError in one line): commands check this before they write anything."""

    @classmethod
    def runs_on_cpu(cls, cfg: LLMConfig) -> bool:
        """Whether this config would run the model on this machine's CPU, told before the backend is made (the dry
        run's profile); a made backend says it in `on_cpu`."""
        return False

    @abc.abstractmethod
    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        """Answer every request; one response each, in order. Requests sharing a prefix should be
        passed together and in order: in-process backends run them back to back (KV-cache reuse),
        HTTP backends send them concurrently (the server's prefix cache serves the shared part)."""

    async def complete(self, request: LLMRequest) -> LLMResponse:
        return (await self.complete_many([request]))[0]

    async def aclose(self) -> None:  # noqa: B027 (optional: a backend with nothing to release keeps this)
        """Release the model / connections."""

    def silent_s(self) -> float:
        """Seconds during which calls have been waiting with no answer from the server at all (the outage clock
        of a remote backend). In-process backends always answer: 0."""
        return 0.0

    def describe(self) -> dict:
        """What to record beside results: backend and model, never keys."""
        return {"backend": self.name, "model": self.model}
