"""LLM backends behind one interface (`LLMBackend`), chosen by the config's `llm.backend` key.

`BACKENDS` is the one registry: name -> (module, class), the module imported only when its name is used (so naming
the registry loads neither llama_cpp, openai nor vllm). A new backend is one module with an `LLMBackend` subclass
(its name, its `check_config`, the capabilities it differs in) and one line here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import LLMBackend, LLMConfigError, LLMRequest, LLMResponse, TokenLogprob

if TYPE_CHECKING:
    from autointerp.engine.config import LLMConfig

# A relative module is one of this package's; a test registers its own class by the module's absolute name.
BACKENDS: dict[str, tuple[str, str]] = {
    "llamacpp": (".llamacpp", "LlamaCppBackend"),
    "openai": (".openai_http", "OpenAIBackend"),
    "vllm": (".vllm_engine", "VLLMBackend"),
}
BACKEND_NAMES = BACKENDS.keys()  # a live view: what the config accepts for llm.backend


def backend_class(name: str) -> type[LLMBackend]:
    """The class registered under `name` (its module imported now); an unknown name is refused in one line."""
    if name not in BACKENDS:
        raise LLMConfigError(f"unknown llm.backend {name!r} ({', '.join(BACKENDS)})")
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module, __name__), cls)


def check_backend_config(cfg: LLMConfig) -> None:
    """What can be told wrong with the LLM settings without loading a model or calling a server (raises
    LLMConfigError in one line): commands check this before they write anything."""
    backend_class(cfg.backend).check_config(cfg)


def make_backend(cfg: LLMConfig) -> LLMBackend:
    cls = backend_class(cfg.backend)
    cls.check_config(cfg)
    return cls(cfg)


__all__ = [
    "BACKENDS",
    "BACKEND_NAMES",
    "backend_class",
    "check_backend_config",
    "LLMBackend",
    "LLMConfigError",
    "LLMRequest",
    "LLMResponse",
    "TokenLogprob",
    "make_backend",
]
