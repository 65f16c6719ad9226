"""Sparse coders behind one `encode`: sparsify, SAELens, Gemma Scope and MLP neurons."""

from __future__ import annotations

from pathlib import Path

from .base import CoderError, SparseActs, SparseCoder
from .neurons import NeuronCoder
from .saelens import GemmaScopeCoder, SAELensCoder
from .sparsify import SparsifyCoder

__all__ = ["CoderError", "SparseActs", "SparseCoder", "load_coder", "NeuronCoder"]


def detect_kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".npz":
        return "gemmascope"
    if (path / "sae.safetensors").exists():
        return "sparsify"
    if (path / "sae_weights.safetensors").exists():
        return "saelens"
    if (path / "params.npz").exists():
        return "gemmascope"
    raise CoderError(
        f"cannot tell the checkpoint format of {path}: expected sae.safetensors (sparsify), "
        "sae_weights.safetensors (SAELens) or params.npz (Gemma Scope)"
    )


def load_coder(path: str | Path, kind: str = "auto", hookpoint: str | None = None) -> SparseCoder:
    """Load a checkpoint. `path` is the checkpoint folder (or npz file); for a sparsify run folder
    holding several hookpoints, `hookpoint` picks the subfolder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CoderError(f"coder checkpoint {path} does not exist")
    if hookpoint and (path / hookpoint).is_dir():
        path = path / hookpoint
    if kind == "auto":
        kind = detect_kind(path)
    if kind == "sparsify":
        return SparsifyCoder(path)
    if kind == "saelens":
        return SAELensCoder(path)
    if kind == "gemmascope":
        return GemmaScopeCoder(path / "params.npz" if path.is_dir() else path, hookpoint)
    raise CoderError(f"unknown coder kind {kind!r} (sparsify, saelens, gemmascope, neurons)")
