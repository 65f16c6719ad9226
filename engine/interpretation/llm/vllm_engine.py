"""vLLM in-process (GPU only): every request of a `complete_many` goes to the engine as one batch, so
vLLM schedules them together and its prefix cache serves the prompt parts they share.

vLLM is imported only when this backend is made; the rest of autointerp never needs it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import threading
import time
import typing
from typing import Sequence

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 300


class VLLMBackend(LLMBackend):
    name = "vllm"

    @classmethod
    def check_config(cls, cfg) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise LLMConfigError(
                "the vllm backend needs the package vllm (pip install 'autointerp[vllm]') on a machine with a GPU"
            )
        if cfg.model == "embedded":
            raise LLMConfigError(
                "llm.model 'embedded' is a GGUF for the llamacpp backend; "
                "the vllm backend needs a Hugging Face id or a local model folder"
            )

    def __init__(self, cfg):
        try:
            import vllm
        except ImportError:
            raise LLMConfigError(
                "the vllm backend needs the package vllm (pip install 'autointerp[vllm]') on a machine with a GPU"
            ) from None
        if cfg.model == "embedded":
            raise LLMConfigError(
                "llm.model 'embedded' is a GGUF for the llamacpp backend; "
                "the vllm backend needs a Hugging Face id or a local model folder"
            )
        self.model = cfg.model
        self._version = getattr(vllm, "__version__", "unknown")
        self._sampling_params = vllm.SamplingParams
        self._schema_option = _schema_option()
        # LLM is not thread-safe: batches from concurrent complete_many calls take turns.
        self._lock = threading.Lock()
        try:
            self._llm = vllm.LLM(
                model=cfg.model,
                enable_prefix_caching=True,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                seed=cfg.seed,
            )
        except Exception as e:  # no GPU, unknown model, out of memory: the backend is unusable
            raise LLMConfigError(f"vllm could not load {cfg.model!r}: {_error_text(e)}") from e

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "vllm": self._version}

    async def aclose(self) -> None:
        # vLLM releases the GPU when the engine is garbage-collected.
        self._llm = None

    def _params(self, req: LLMRequest):
        kw = dict(
            max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed, logprobs=req.top_logprobs or None
        )
        if req.json_schema is not None:
            kw.update(self._schema_option(req.json_schema))
        return self._sampling_params(**kw)

    def _chat(self, conversations: list, params: list) -> list:
        with self._lock:
            return self._llm.chat(conversations, params, use_tqdm=False)

    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        responses: list[LLMResponse | None] = [None] * len(requests)
        batch = []  # (index, messages, sampling params) of the requests whose parameters are valid
        for i, req in enumerate(requests):
            try:
                batch.append((i, req.messages, self._params(req)))
            except Exception as e:  # e.g. a schema vLLM rejects: only this request fails
                responses[i] = LLMResponse(error=_error_text(e))
        if batch:
            start, failure = time.perf_counter(), None
            try:
                outputs = await asyncio.to_thread(self._chat, [m for _, m, _ in batch], [p for _, _, p in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(batch)} requests")
            except Exception as e:  # the batch failed as a whole: every request in it did
                outputs, failure = [None] * len(batch), _error_text(e)
            # The batch runs as one; a request's own time is not observable, so each gets an equal share
            # of the batch's wall time (the sum over requests is the true total).
            share = (time.perf_counter() - start) / len(batch)
            for (i, _, _), out in zip(batch, outputs):
                if failure is not None:
                    resp = LLMResponse(error=failure)
                else:
                    try:
                        resp = _parse(out, requests[i].top_logprobs)
                    except Exception as e:
                        resp = LLMResponse(error=_error_text(e))
                resp.latency_s = share
                responses[i] = resp
            log.debug(
                "vllm batch of %d requests in %.2fs%s",
                len(batch),
                share * len(batch),
                f": failed ({failure})" if failure else "",
            )
        for r in responses:
            log.debug("vllm call: %s", r.summary())
        return typing.cast(list[LLMResponse], responses)  # every slot is filled above


def _schema_option():
    """How this vLLM takes a JSON schema: `structured_outputs=StructuredOutputsParams` (vLLM >= 0.11),
    else `guided_decoding=GuidedDecodingParams`. Detected by what can be imported, not by version."""
    try:
        from vllm.sampling_params import StructuredOutputsParams

        return lambda schema: {"structured_outputs": StructuredOutputsParams(json=schema)}
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return lambda schema: {"guided_decoding": GuidedDecodingParams(json=schema)}


def _parse(out, k: int) -> LLMResponse:
    if not out.outputs:
        raise RuntimeError("vllm returned no completion for this request")
    comp = out.outputs[0]
    return LLMResponse(
        text=comp.text,
        prompt_tokens=len(out.prompt_token_ids or []),
        cached_tokens=getattr(out, "num_cached_tokens", None),
        output_tokens=len(comp.token_ids),
        finish_reason=comp.finish_reason,
        logprobs=_logprobs(comp, k) if k > 0 else None,
    )


def _logprobs(comp, k: int) -> list[TokenLogprob] | None:
    if comp.logprobs is None:
        return None
    out = []
    # One dict per generated token: token id -> Logprob(logprob, rank, decoded_token). It holds the k
    # likeliest tokens plus the sampled one when that is outside them.
    for token_id, position in zip(comp.token_ids, comp.logprobs):
        position = position or {}
        chosen = position.get(token_id)
        ranked = sorted(position.values(), key=lambda lp: -lp.logprob)
        top: dict[str, float] = {}
        for lp in ranked[:k]:
            if lp.decoded_token is not None:
                top.setdefault(lp.decoded_token, lp.logprob)  # same text from two ids: keep the likelier
        out.append(
            TokenLogprob(
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=chosen.logprob if chosen else math.nan,
                top=top,
            )
        )
    return out


def _error_text(e: Exception) -> str:
    message = " ".join(str(e).split())[:_MAX_ERROR_CHARS]
    return f"{type(e).__name__}: {message}" if message else type(e).__name__
