"""LLM backends behind one interface (`LLMBackend`), chosen by the config's `llm.backend` key."""

from __future__ import annotations

import importlib.util
import urllib.parse

from autointerp.engine.config import LLMConfig

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob


def check_backend_config(cfg: LLMConfig) -> None:
    """What can be told wrong with the LLM settings without loading a model or calling a server (raises
    LLMConfigError in one line): commands check this before they write anything."""
    if cfg.backend == "llamacpp":
        from .llamacpp import resolve_gguf

        path = resolve_gguf(cfg.model)
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise LLMConfigError(f"llm.model: {path} is not a GGUF file")
        if cfg.n_ctx < 4096:
            raise LLMConfigError(f"llm.n_ctx must be at least 4096 (got {cfg.n_ctx}): scorer prompts are long")
    elif cfg.backend == "openai":
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
    elif cfg.backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise LLMConfigError(
                "the vllm backend needs the package vllm (pip install 'autointerp[vllm]') on a machine with a GPU"
            )
        if cfg.model == "embedded":
            raise LLMConfigError(
                "llm.model 'embedded' is a GGUF for the llamacpp backend; "
                "the vllm backend needs a Hugging Face id or a local model folder"
            )
    else:
        raise LLMConfigError(f"unknown llm.backend {cfg.backend!r} (llamacpp, openai, vllm)")


def make_backend(cfg: LLMConfig) -> LLMBackend:
    check_backend_config(cfg)
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


__all__ = [
    "check_backend_config",
    "LLMBackend",
    "LLMConfigError",
    "LLMRequest",
    "LLMResponse",
    "TokenLogprob",
    "make_backend",
]
