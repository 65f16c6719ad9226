"""Any OpenAI-compatible chat server (OpenAI, vLLM serve, llama.cpp's server, OpenRouter) over HTTP.

Requests are spread round-robin over `cfg.base_urls` and sent concurrently, at most
`cfg.max_concurrency` in flight. Retries with exponential backoff (408/409/429/5xx, connection errors,
honouring `retry-after`) are the openai client's own. A call that still fails for a transient reason (no
connection, a timeout, 429, 5xx) is sent to the next replica of the fleet, and a replica that failed so is
skipped for a while (a circuit breaker). Only when every replica failed does the response come back
`unavailable`: the caller pauses and retries it, and never stores it as an outcome. Any other failure (a 4xx,
a 200 that is not a chat completion) is that request's own: `LLMResponse(error=...)`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import urllib.parse
from typing import Sequence

import openai
from openai.types.chat import ChatCompletion

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob

log = logging.getLogger(__name__)

# Local servers (llama.cpp, vLLM) accept any key, but the client refuses to start without one.
_NO_KEY = "unused"
_MAX_ERROR_CHARS = 300
# A replica whose call failed for a transient reason is skipped for this long (doubling while it keeps failing,
# up to the cap); when every replica is skipped, all are tried anyway.
_COOLDOWN_S, _COOLDOWN_MAX_S = 5.0, 60.0
TRANSIENT = (openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError)  # timeouts included


class _Replica:
    """One server of the fleet and its health, as this process has seen it."""

    def __init__(self, client: openai.AsyncOpenAI):
        self.client = client
        self.url = str(client.base_url)  # for the log: a URL, never the key
        self.down_until = 0.0
        self.failures = 0  # consecutive transient failures

    def failed(self, now: float) -> float:
        """Count a transient failure; returns how long the replica is now skipped."""
        self.failures += 1
        cooldown = min(_COOLDOWN_S * 2 ** (self.failures - 1), _COOLDOWN_MAX_S)
        self.down_until = now + cooldown
        return cooldown

    def answered(self) -> None:
        self.failures, self.down_until = 0, 0.0


async def _log_retried(response) -> None:
    """An answer the openai client retries by itself (408, 409, 429, 5xx), as a WARNING: the retries it makes are
    otherwise told only by the client's own logger."""
    if response.status_code in (408, 409, 429) or response.status_code >= 500:
        log.warning(
            "%s answered HTTP %d; the client retries it (up to llm.max_retries times)",
            response.request.url,
            response.status_code,
        )


def _http_client():
    # The client's own default connection settings, with one hook that logs the answers it will retry.
    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [_log_retried]})


class BadResponse(Exception):
    """A 200 answer that is not a usable chat completion."""


class OpenAIBackend(LLMBackend):
    name = "openai"
    in_process = False

    @classmethod
    def check_config(cls, cfg) -> None:
        if not cfg.base_urls:
            raise LLMConfigError("llm.base_urls is empty: the openai backend needs at least one server URL")
        for url in cfg.base_urls:
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise LLMConfigError(f"llm.base_urls: {url!r} is not an http:// or https:// URL")
        if cfg.max_concurrency < 1:
            raise LLMConfigError(f"llm.max_concurrency must be at least 1, got {cfg.max_concurrency}")
        if not cfg.timeout_s > 0 or cfg.max_retries < 0:
            raise LLMConfigError("llm.timeout_s must be positive and llm.max_retries at least 0")

    def __init__(self, cfg):
        if not cfg.base_urls:
            raise LLMConfigError("llm.base_urls is empty: the openai backend needs at least one server URL")
        if cfg.max_concurrency < 1:
            raise LLMConfigError(f"llm.max_concurrency must be at least 1, got {cfg.max_concurrency}")
        if cfg.structured_output not in ("json_schema", "json_object", "none"):
            raise LLMConfigError(
                f"llm.structured_output {cfg.structured_output!r} is not json_schema, json_object or none"
            )
        self.model = cfg.model
        self._cfg = cfg
        self.json_output = cfg.structured_output != "none"  # "none": the server takes no schema, free text is parsed
        self.parallel_latents = cfg.max_concurrency  # many latents keep a server (or a fleet) busy
        # Kept only to scrub it from error text; never returned or logged.
        self._key = os.environ.get(cfg.api_key_env) or _NO_KEY
        self._turn = itertools.count()  # round-robin position over the replicas
        self._replicas, self._slots = self._connect()
        self._loop = None  # the event loop the clients and semaphore serve (bound on first use)
        # For the outage clock: when each call in flight was sent, and when any server last answered anything.
        self._sent: dict[int, float] = {}
        self._call_ids = itertools.count()
        self._last_answer = 0.0

    def _connect(self) -> tuple[list[_Replica], asyncio.Semaphore]:
        cfg = self._cfg
        replicas = [
            _Replica(
                openai.AsyncOpenAI(
                    base_url=url,
                    api_key=self._key,
                    timeout=cfg.timeout_s,
                    max_retries=cfg.max_retries,
                    http_client=_http_client(),
                )
            )
            for url in cfg.base_urls
        ]
        return replicas, asyncio.Semaphore(cfg.max_concurrency)

    def _bind_loop(self) -> None:
        # A semaphore and pooled connections belong to one event loop; a caller making successive
        # asyncio.run() calls gets fresh ones, since the previous loop's are unusable.
        loop = asyncio.get_running_loop()
        if self._loop is not None and self._loop is not loop:
            self._replicas, self._slots = self._connect()
            self._sent.clear()
        self._loop = loop

    def silent_s(self) -> float:
        """Seconds during which calls were waiting and no server answered anything (0 when none waits)."""
        if not self._sent:
            return 0.0
        return time.monotonic() - max(self._last_answer, min(self._sent.values()))

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "base_urls": list(self._cfg.base_urls)}

    async def aclose(self) -> None:
        for replica in self._replicas:
            await replica.client.close()

    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        self._bind_loop()
        # Replicas are picked here, in request order, so successive requests go to successive servers.
        firsts = [next(self._turn) % len(self._replicas) for _ in requests]
        return list(await asyncio.gather(*(self._one(i, r) for i, r in zip(firsts, requests))))

    def _order(self, first: int) -> list[_Replica]:
        """The replicas to try, starting at `first`: those not cooling down after a failure come first."""
        n = len(self._replicas)
        ring = [self._replicas[(first + k) % n] for k in range(n)]
        now = time.monotonic()
        return [r for r in ring if r.down_until <= now] + [r for r in ring if r.down_until > now]

    def _kwargs(self, req: LLMRequest) -> dict:
        kw = {
            "model": self.model,
            "messages": req.messages,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "seed": req.seed if req.seed is not None else self._cfg.seed,
        }
        if req.json_schema is not None:
            mode = self._cfg.structured_output
            if mode == "json_schema":
                kw["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": req.json_schema, "strict": True},
                }
            elif mode == "json_object":  # llama.cpp's llama_cpp.server syntax
                kw["response_format"] = {"type": "json_object", "schema": req.json_schema}
        if req.top_logprobs > 0:
            kw["logprobs"] = True
            kw["top_logprobs"] = req.top_logprobs
        return kw

    async def _one(self, first: int, req: LLMRequest) -> LLMResponse:
        async with self._slots:
            call = next(self._call_ids)
            start = time.perf_counter()
            self._sent[call] = time.monotonic()
            try:
                resp = await self._try_replicas(first, req)
            finally:
                del self._sent[call]
            resp.latency_s = time.perf_counter() - start
            log.debug("openai call: %s", resp.summary())
            return resp

    async def _try_replicas(self, first: int, req: LLMRequest) -> LLMResponse:
        error: Exception | None = None
        for replica in self._order(first):
            try:
                completion = await replica.client.chat.completions.create(**self._kwargs(req))
            except TRANSIENT as e:  # this server is down, overloaded or too slow: try the next one
                cooldown = replica.failed(time.monotonic())
                # After the client's own retries (the openai logger tells those): fail over, cool this one down.
                log.warning(
                    "replica %s failed (%s); skipped for %.0fs, trying the next",
                    replica.url,
                    self._error_text(e),
                    cooldown,
                )
                error = e
                continue
            except Exception as e:  # the server's answer about this request (a 4xx): one failed call
                self._heard(replica)
                return LLMResponse(error=self._error_text(e))
            self._heard(replica)
            try:
                return _parse(completion, req.top_logprobs)
            except Exception as e:  # a 200 that is not a chat completion: this call failed, the server is up
                return LLMResponse(error=self._error_text(e))
        log.warning("every replica failed for this call: it is unavailable and will be sent again")
        return LLMResponse(error=self._error_text(error or RuntimeError("no replica")), unavailable=True)

    def _heard(self, replica: _Replica) -> None:
        if replica.failures:
            log.warning("replica %s answers again after %d failed calls", replica.url, replica.failures)
        replica.answered()
        self._last_answer = time.monotonic()

    def _error_text(self, e: Exception) -> str:
        # One line: servers put the useful part after a newline (llama.cpp: "Error code: 500 - 1
        # validation error:\n  {...}"), so whitespace is folded rather than the rest dropped.
        message = " ".join(str(e).split())
        if self._key != _NO_KEY:
            message = message.replace(self._key, "***")  # before truncating, so no part of it survives
        message = message[:_MAX_ERROR_CHARS]
        return f"{type(e).__name__}: {message}" if message else type(e).__name__


def _parse(completion, k: int) -> LLMResponse:
    # Without strict validation the client returns the raw text for a non-JSON body and unvalidated
    # models for JSON of the wrong shape, so every field is checked here.
    choices = getattr(completion, "choices", None)
    if not isinstance(completion, ChatCompletion) or not choices:
        raise BadResponse("the server's 200 answer is not a chat completion with choices")
    choice = choices[0]
    text = getattr(getattr(choice, "message", None), "content", None)
    if not isinstance(text, str):
        raise BadResponse("the server's answer has no message content")
    usage = getattr(completion, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None)
    return LLMResponse(
        text=text,
        prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
        cached_tokens=cached,
        output_tokens=getattr(usage, "completion_tokens", None) or 0,
        finish_reason=getattr(choice, "finish_reason", None),
        logprobs=_logprobs(getattr(choice, "logprobs", None), k) if k > 0 else None,
    )


def _logprobs(lp, k: int) -> list[TokenLogprob] | None:
    content = getattr(lp, "content", None)
    if content is None:
        return None  # the server gave none: callers treat that as "no logprobs", not as an error
    out = []
    for entry in content:
        ranked = sorted(((t.token, _num(t.logprob)) for t in entry.top_logprobs or []), key=lambda p: -p[1])
        # llama.cpp adds the chosen token when it is outside the top k; keep the k asked for. Two token
        # ids can decode to the same text: the likelier one is kept.
        top: dict[str, float] = {}
        for token, logprob in ranked[:k]:
            top.setdefault(token, logprob)
        out.append(TokenLogprob(entry.token, _num(entry.logprob), top))
    return out


def _num(x) -> float:
    return float(x) if x is not None else math.nan
