"""Reading checkpoint tensors from safetensors and npz: never a pickle (dictionary_learning.py reads ae.pt with
torch.load(weights_only=True), which unpickles tensors only)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .base import CoderError


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CoderError(f"{path} is not a readable safetensors file ({e})") from None


def load_npz(path: Path) -> dict[str, torch.Tensor]:
    try:
        # allow_pickle=False: an npz holding object arrays is refused, not unpickled.
        with np.load(path, allow_pickle=False) as f:
            return {k: torch.from_numpy(np.asarray(f[k], dtype=np.float32)) for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CoderError(f"{path} is not a readable npz file ({e})") from None
