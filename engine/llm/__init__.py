"""LLM backends behind one interface (`LLMBackend`), chosen by the config's `llm.backend` key."""

from __future__ import annotations

from autointerp.engine.config import LLMConfig

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob


def make_backend(cfg: LLMConfig) -> LLMBackend:
    if cfg.backend == "llamacpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(cfg)
    if cfg.backend == "openai":
        from .openai_http import OpenAIBackend

        return OpenAIBackend(cfg)
    if cfg.backend == "vllm":
        from .vllm_engine import VLLMBackend

        return VLLMBackend(cfg)
    raise LLMConfigError(f"unknown llm.backend {cfg.backend!r} (llamacpp, openai, vllm)")


__all__ = ["LLMBackend", "LLMConfigError", "LLMRequest", "LLMResponse", "TokenLogprob", "make_backend"]
