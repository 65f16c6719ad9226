"""Model weights on disk: autointerp's cache folder, and GGUF files dequantised once into safetensors folders that
transformers and TransformerLens load (engine/activations/model.py loads them; tiny.py builds its stand-ins here)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import torch

from autointerp.store.errors import UserError


class ModelError(UserError):
    """A subject model or hook point that cannot be used, stated in one line."""


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("AUTOINTERP_CACHE_DIR") or user_cache_dir("autointerp"))


@contextlib.contextmanager
def _quiet_gguf_loader():
    """transformers' GGUF dequantisation draws a tqdm bar of its own, deaf to its disable_progress_bar(): silence
    it for this call (a command's output is its result, or one error line)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    loud = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(loud, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = loud


def gguf_as_safetensors(gguf: Path) -> tuple[Path, str]:
    """Dequantise a GGUF once with transformers' loader; later loads read the cached safetensors."""
    digest = hash_file(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{digest}"
    if (target / "config.json").exists():
        return target, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with _quiet_gguf_loader():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # transformers raises many types for unreadable GGUF files
        raise ModelError(f"cannot load GGUF {gguf} ({type(e).__name__}: {e})") from None
    # Saved weights are plain fp32 now: drop the quantisation markers so reloads skip the GGUF path.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' own attribute, unset on purpose
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # A private temporary folder per process: two processes converting the same file at once (two batch
    # processes on one machine) each write their own, and the first rename wins.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a half-written cache is never used
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loser's copy (nothing is left after a won rename)
    return target, digest
