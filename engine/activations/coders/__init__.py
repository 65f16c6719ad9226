"""Sparse coders behind one `encode`: sparsify, SAELens, Gemma Scope, dictionary_learning and MLP neurons."""

from __future__ import annotations

from pathlib import Path

from . import hub
from .base import CoderError, SparseActs, SparseCoder
from .dictionary_learning import DictionaryLearningCoder
from .neurons import NeuronCoder
from .saelens import GemmaScopeCoder, SAELensCoder
from .sparsify import SparsifyCoder

__all__ = ["CoderError", "SparseActs", "SparseCoder", "load_coder", "load_hub_coder", "NeuronCoder"]


def detect_kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".npz":
        return "gemmascope"
    if path.is_file() and path.name == "ae.pt":
        return "dictionary_learning"
    if (path / "sae.safetensors").exists():
        return "sparsify"
    if (path / "sae_weights.safetensors").exists():
        return "saelens"
    if (path / "params.npz").exists():
        return "gemmascope"
    if (path / "ae.pt").exists():
        return "dictionary_learning"
    raise CoderError(
        f"cannot tell the checkpoint format of {path}: expected sae.safetensors (sparsify), "
        "sae_weights.safetensors (SAELens), params.npz (Gemma Scope) or ae.pt + config.json (dictionary_learning)"
    )


def load_coder(path: str | Path, kind: str = "auto", hookpoint: str | None = None) -> SparseCoder:
    """Load a checkpoint. `path` is the checkpoint folder (or npz file), or a hub spec (`saelens:RELEASE/SAE_ID`,
    `hf:ORG/REPO[/PATH]`: hub.py); for a sparsify run folder holding several hookpoints, `hookpoint` picks the
    subfolder."""
    if isinstance(path, str) and hub.is_hub_spec(path):
        return load_hub_coder(path, kind, hookpoint)
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
    if kind == "dictionary_learning":
        return DictionaryLearningCoder(path if path.is_dir() else path.parent)
    raise CoderError(f"unknown coder kind {kind!r} (sparsify, saelens, gemmascope, dictionary_learning, neurons)")


def load_hub_coder(spec: str, kind: str = "auto", hookpoint: str | None = None) -> SparseCoder:
    """A hub-named coder, downloaded into the Hugging Face cache if it is not there yet. Its `path` is the spec pinned
    to the commit read (`saelens:RELEASE/SAE_ID@COMMIT`), which loads the same files again from the cache."""
    h = hub.locate(spec, hookpoint or "")
    folder = hub.download(h)
    coder = load_coder(folder, h.kind if kind == "auto" else kind, h.hook if h.kind == "gemmascope" else None)
    coder.path = h.pinned
    if coder.hook is None:  # e.g. a SAELens cfg.json from before SAELens 6 names it `hook_point`
        coder.hook = h.hook
    return coder
