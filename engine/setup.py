"""Resolve a CacheConfig into loaded parts (model, coder, hook), validating everything up front."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .coders import NeuronCoder, SparseCoder, load_coder
from .coders.base import CoderError
from .config import CacheConfig
from .corpus import CorpusSpec, corpus_hash
from .defaults import EMBEDDED_HOOKPOINT, embedded_sae
from .model import ModelError, SubjectModel, hook_from_module_path


@dataclass
class CacheParts:
    model: SubjectModel
    coder: SparseCoder
    hook: str


def load_configured_coder(cfg: CacheConfig, model: SubjectModel) -> SparseCoder:
    if cfg.coder == "neurons" or cfg.coder_kind == "neurons":
        hook = cfg.hook or f"blocks.{model.n_layers // 2}.mlp.hook_post"
        if not hook.endswith("mlp.hook_post"):
            raise ModelError(f"neurons read an MLP's hidden activations: use a blocks.N.mlp.hook_post hook, not {hook!r}")
        return NeuronCoder(model.d_mlp, hook, cfg.neurons_k or None)
    if cfg.coder == "embedded":
        return load_coder(embedded_sae(), "sparsify")
    hookpoint = cfg.hook if cfg.hook and Path(cfg.coder, cfg.hook).is_dir() else None
    return load_coder(cfg.coder, cfg.coder_kind, hookpoint)


def prepare(cfg: CacheConfig, model: SubjectModel | None = None) -> CacheParts:
    if not 2 <= cfg.seq_len <= 65_536 or cfg.chunk_tokens > 65_536:
        raise ModelError("seq_len and chunk_tokens must be at most 65,536 (chunk offsets are uint16)")
    if cfg.batch_size < 1 or cfg.n_tokens < cfg.seq_len:
        raise ModelError("batch_size must be >= 1 and n_tokens >= seq_len")
    corpus_hash(CorpusSpec(cfg.corpus, cfg.text_field, cfg.seed))  # a missing corpus fails here, first
    if cfg.coder not in ("embedded", "neurons") and not Path(cfg.coder).expanduser().exists():
        raise CoderError(f"coder checkpoint {cfg.coder} does not exist")
    model = model or SubjectModel.load(cfg.model, cfg.device, cfg.dtype)
    coder = load_configured_coder(cfg, model)
    if cfg.model == "embedded" and cfg.coder == "embedded":
        hook_spec = cfg.hook or EMBEDDED_HOOKPOINT
    else:
        hook_spec = cfg.hook or coder.hook
    if not hook_spec:
        raise ModelError(f"the coder checkpoint {coder.path} names no hook point: set `hook`")
    hook = hook_from_module_path(hook_spec, coder.transcoder)
    model.check_hook(hook)
    width = model.hook_width(hook)
    if coder.d_in != width:
        raise CoderError(f"coder d_in {coder.d_in} does not match hook {hook!r} width {width}")
    coder.to(model.device)
    return CacheParts(model, coder, hook)
