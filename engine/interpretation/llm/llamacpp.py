"""llama.cpp in-process (llama-cpp-python): any GGUF, CPU or GPU offload.

Calls run one at a time in a worker thread, in the order given, so consecutive prompts that share a
prefix reuse llama.cpp's KV cache (measured here: an 800-token prefix 3.7 s cold, 0.1 s warm).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from autointerp.engine.config import LLMConfig

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob

log = logging.getLogger(__name__)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def avoid_amx_crash() -> None:
    """Load weights without llama.cpp's extra (repacked) buffer types where this build would use its AMX kernels.

    On Intel CPUs with AMX (Sapphire Rapids and later) the AMX matmul segfaults on the first decode on some
    machines (ggml-org/llama.cpp#20824, closed unfixed; seen here with llama-cpp-python 0.3.36 and the embedded
    Q4_1 model, every call). `Llama` takes no option for it, so the default model parameters it starts from are
    wrapped once, for this process. Elsewhere nothing changes (repacking stays on where it is safe)."""
    import llama_cpp.llama_cpp as lib

    if getattr(lib.llama_model_default_params, "_autointerp_no_amx", False):
        return
    if b"AMX_INT8 = 1" not in lib.llama_print_system_info():
        return
    defaults = lib.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    without_extra_buffers._autointerp_no_amx = True  # type: ignore[attr-defined]
    lib.llama_model_default_params = without_extra_buffers


def resolve_gguf(spec: str) -> Path:
    if spec == "embedded":
        from autointerp.engine.defaults import MissingDefault, smollm2_gguf

        try:
            return smollm2_gguf()
        except MissingDefault as e:
            raise LLMConfigError(str(e)) from None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise LLMConfigError(f"llm.model: GGUF file {path} does not exist")
    return path


class _LogprobRecorder:
    """A llama.cpp logits processor that records log-probabilities and changes nothing.

    Asking llama-cpp-python for logprobs needs `logits_all=True` (slower prompts, +0.8 GB at 4k
    context); a processor sees each step's raw logits, before the grammar masks them, for free.
    """

    def __init__(self, llm, k: int):
        self.llm, self.k = llm, k
        self.steps: list[tuple[dict[str, float], np.ndarray]] = []  # per step: (top k texts, all logprobs)

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        s = scores.astype(np.float64)
        m = s.max()
        lp = s - m - math.log(np.exp(s - m).sum())
        top = np.argpartition(-lp, self.k)[: self.k]
        self.steps.append(({self._text(i): float(lp[i]) for i in top}, lp))
        return scores

    def _text(self, token: int) -> str:
        return self.llm.detokenize([int(token)], special=True).decode("utf-8", errors="replace")

    def tokens(self, generated: list[int]) -> list[TokenLogprob]:
        out = []
        for (top, lp), tok in zip(self.steps, generated):
            out.append(TokenLogprob(self._text(tok), float(lp[tok]), top))
        return out


def gpu_offload() -> bool:
    """Whether this llama.cpp build can offload layers to a GPU (a CUDA/Metal wheel)."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


class LlamaCppBackend(LLMBackend):
    name = "llamacpp"
    threads_from_config = True

    @classmethod
    def check_config(cls, cfg: LLMConfig) -> None:
        path = resolve_gguf(cfg.model)
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise LLMConfigError(f"llm.model: {path} is not a GGUF file")
        if cfg.n_ctx < 4096:
            raise LLMConfigError(f"llm.n_ctx must be at least 4096 (got {cfg.n_ctx}): scorer prompts are long")

    @classmethod
    def runs_on_cpu(cls, cfg: LLMConfig) -> bool:
        return not gpu_offload() or cfg.n_gpu_layers == 0

    def __init__(self, cfg: LLMConfig):
        try:
            import llama_cpp
        except ImportError as e:  # pragma: no cover - a dependency
            raise LLMConfigError(f"llama-cpp-python is not importable ({e})") from None
        path = resolve_gguf(cfg.model)
        if cfg.n_ctx < 4096:
            raise LLMConfigError(f"llm.n_ctx must be at least 4096 (got {cfg.n_ctx}): scorer prompts are long")
        avoid_amx_crash()
        threads = cfg.n_threads or available_cores()
        # All layers on the GPU when this llama.cpp build can offload (a CUDA/Metal wheel); else CPU.
        gpu_layers = cfg.n_gpu_layers if llama_cpp.llama_supports_gpu_offload() else 0
        t0 = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=cfg.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_gpu_layers=gpu_layers,
                seed=cfg.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise LLMConfigError(f"llm.model: cannot load GGUF {path} ({e})") from None
        self.model = "embedded:SmolLM2-135M-Instruct" if cfg.model == "embedded" else str(path)
        self.n_threads, self.n_gpu_layers, self.n_ctx = threads, gpu_layers, cfg.n_ctx
        self.on_cpu = gpu_layers == 0
        log.info(
            "llamacpp: loaded %s in %.1fs (%d threads, %d GPU layers, n_ctx %d)",
            path,
            time.perf_counter() - t0,
            threads,
            gpu_layers,
            cfg.n_ctx,
        )
        # A thread lock, not an asyncio one: it serves callers from any event loop.
        self._lock = threading.Lock()
        self._closing = False

    def describe(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model,
            "n_threads": self.n_threads,
            "n_gpu_layers": self.n_gpu_layers,
            "n_ctx": self.n_ctx,
        }

    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        # One worker thread for the whole batch: the event loop stays free, the order is kept, and
        # another caller's batch waits rather than interleaving (which would evict the shared prefix).
        return await asyncio.to_thread(self._complete_batch, list(requests))

    def _complete_batch(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        with self._lock:
            responses = [
                self._complete(r) if not self._closing else LLMResponse(error="backend closed") for r in requests
            ]
        for r in responses:
            log.debug("llamacpp call: %s", r.summary())
        return responses

    def _complete(self, req: LLMRequest) -> LLMResponse:
        llm = self.llm
        before = np.array(llm.input_ids[: llm.n_tokens])  # what the KV cache holds now
        recorder = _LogprobRecorder(llm, req.top_logprobs) if req.top_logprobs > 0 else None
        kwargs: dict = {}
        if req.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req.json_schema}
        if recorder is not None:
            kwargs["logits_processor"] = [recorder]
        t0 = time.perf_counter()
        try:
            out = llm.create_chat_completion(
                messages=req.messages,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                seed=req.seed,
                **kwargs,
            )
        except Exception as e:  # llama.cpp raises ValueError for an over-long prompt, RuntimeError on decode
            return LLMResponse(
                error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                latency_s=time.perf_counter() - t0,
            )
        latency = time.perf_counter() - t0
        usage = out["usage"]
        n_prompt, n_out = int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        ids = np.array(llm.input_ids[: llm.n_tokens])
        prompt_ids = ids[:n_prompt]
        # Served from cache = the longest common prefix with what the KV cache held before, less the
        # one token llama.cpp re-evaluates when the whole prompt was cached.
        n = min(len(before), len(prompt_ids))
        mismatch = np.flatnonzero(before[:n] != prompt_ids[:n])
        lcp = int(mismatch[0]) if len(mismatch) else n
        cached = min(lcp, n_prompt - 1) if n_prompt else 0
        choice = out["choices"][0]
        logprobs = None
        if recorder is not None:
            # The tokens generated are the ids each later step saw; the last step's own token is the
            # one llama.cpp stopped on (EOS / end of grammar), which carries no text.
            generated = [int(ids[n_prompt + i]) for i in range(min(n_out, len(ids) - n_prompt))]
            logprobs = recorder.tokens(generated)
        return LLMResponse(
            text=choice["message"]["content"] or "",
            prompt_tokens=n_prompt,
            cached_tokens=max(cached, 0),
            output_tokens=n_out,
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
            logprobs=logprobs,
        )

    async def aclose(self) -> None:
        # A cancelled caller's batch may still be running on its worker thread: freeing the context under
        # it crashes the process. Let it stop after its current request, then free.
        self._closing = True
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self.llm.close()
