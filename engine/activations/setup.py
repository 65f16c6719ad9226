"""Resolve a CacheConfig into loaded parts (model, coder, hook), validating everything up front."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autointerp.engine.activations.coders.base import CoderError
from autointerp.engine.config import CacheConfig
from autointerp.engine.defaults import EMBEDDED_HOOKPOINT, embedded_sae

from .coders import NeuronCoder, SparseCoder, hub, load_coder
from .corpus import CorpusSpec, corpus_hash
from .model import (
    PLAIN_SITES_VERSION,
    POST_NORM_TYPES,
    ModelError,
    SubjectModel,
    check_hook_layer,
    hook_from_module_path,
    hook_layer,
    hook_width_of,
    model_config,
    model_display_name,
    model_shape,
    site_may_have_moved,
    stale_forward,
)


@dataclass
class CacheParts:
    model: SubjectModel
    coder: SparseCoder
    hook: str


def load_configured_coder(cfg: CacheConfig, model: SubjectModel | None) -> SparseCoder:
    """The coder a cache config names. Only neurons need the model (their width and default hook); a
    checkpoint loads without it, so its identity can be checked before the model is loaded."""
    if cfg.coder == "neurons" or cfg.coder_kind == "neurons":
        if model is None:
            raise ValueError("neurons need the subject model")
        hook = cfg.hook or f"blocks.{model.n_layers // 2}.mlp.hook_post"
        if not hook.endswith("mlp.hook_post"):
            raise ModelError(
                f"neurons read an MLP's hidden activations: use a blocks.N.mlp.hook_post hook, not {hook!r}"
            )
        return NeuronCoder(model.d_mlp, hook, cfg.neurons_k or None)
    if cfg.coder == "embedded":
        return load_coder(embedded_sae(), "sparsify")
    if hub.is_hub_spec(cfg.coder):  # `hook` may pick a sparsify run's hookpoint folder on the hub
        return load_coder(cfg.coder, cfg.coder_kind, cfg.hook or None)
    hookpoint = cfg.hook if cfg.hook and Path(cfg.coder, cfg.hook).is_dir() else None
    return load_coder(cfg.coder, cfg.coder_kind, hookpoint)


def settle_hub_coder(cfg: CacheConfig) -> None:
    """For a coder named by hub (`saelens:` / `hf:`, coders/hub.py), fill in `cfg` in place, before anything large is
    downloaded or loaded: `model` (when left at "embedded") and `hook` (when empty) from what the checkpoint records,
    each checked against the checkpoint where set (a mismatch is one error line), and `coder` pinned to the commit
    read, so every later stage (and the provenance's config) loads the same model, hook and files. Idempotent."""
    if not hub.is_hub_spec(cfg.coder) or cfg.coder_kind == "neurons":
        return
    h = hub.locate(cfg.coder, cfg.hook)
    cfg.model, cfg.hook = hub.settle(h, cfg.model, cfg.hook)
    cfg.coder = h.pinned


def resolve_hook(cfg: CacheConfig, coder: SparseCoder) -> str:
    if cfg.model == "embedded" and cfg.coder == "embedded":
        hook_spec = cfg.hook or EMBEDDED_HOOKPOINT
    else:
        hook_spec = cfg.hook or coder.hook or ""
    if not hook_spec:
        raise ModelError(f"the coder checkpoint {coder.path} names no hook point: set `hook`")
    hook = hook_from_module_path(hook_spec, coder.transcoder, _post_norm(cfg.model, hook_spec))
    hook_layer(hook)  # an unknown hook name fails here, before any model is loaded
    return hook


def _post_norm(model: str, hook_spec: str) -> bool:
    """Whether a sparsify module path names a submodule of a post-norm family's block (model.hook_from_module_path):
    the model's config is read only for such a path."""
    if not re.fullmatch(r"(?:model\.)?layers\.\d+\.(mlp|self_attn)", hook_spec):
        return False
    return getattr(model_config(model), "model_type", None) in POST_NORM_TYPES


def check_width(coder: SparseCoder, hook: str, width: int) -> None:
    if coder.d_in != width:
        raise CoderError(f"coder d_in {coder.d_in} does not match hook {hook!r} width {width}")


def check_cache_settings(cfg: CacheConfig) -> None:
    if not 2 <= cfg.seq_len <= 65_536 or cfg.chunk_tokens > 65_536:
        raise ModelError("seq_len and chunk_tokens must be at most 65,536 (chunk offsets are uint16)")
    if cfg.batch_size < 1 or cfg.n_tokens < cfg.seq_len:
        raise ModelError("batch_size must be >= 1 and n_tokens >= seq_len")
    if cfg.window_len < 1 or cfg.chunk_tokens < 1:
        raise ModelError("window_len and chunk_tokens must be at least 1")


def prepare(
    cfg: CacheConfig, model: SubjectModel | None = None, precheck: Callable[[dict], object] | None = None
) -> CacheParts:
    """Load and check the model, coder and hook of a cache config, cheapest checks first.

    `precheck(identity)` is called with what is known of the cache's identity before the subject model loads
    (corpus hash, sequence length, coder kind and hash, hook, model name), so a database made from other inputs
    is refused before the slow part."""
    check_cache_settings(cfg)
    spec = CorpusSpec.of(cfg)
    digest = corpus_hash(spec)  # a missing corpus fails here, first
    settle_hub_coder(cfg)  # a hub-named coder: model and hook checked and filled in, its small files only read
    if cfg.coder not in ("embedded", "neurons") and not hub.is_hub_spec(cfg.coder):
        if not Path(cfg.coder).expanduser().exists():
            raise CoderError(f"coder checkpoint {cfg.coder} does not exist")
    neurons = cfg.coder == "neurons" or cfg.coder_kind == "neurons"
    coder = None if neurons else load_configured_coder(cfg, None)
    if coder is not None:  # the hook and the coder against the model's config (cheap), before the database's identity
        shape = model_shape(cfg.model)
        if shape is not None:
            hook = resolve_hook(cfg, coder)
            check_hook_layer(hook, shape.n_layers)
            check_width(coder, hook, hook_width_of(hook, shape))
    if precheck is not None:
        identity = {
            "model": model_display_name(cfg.model),
            "corpus_hash": digest,
            "seq_len": cfg.seq_len,
            "chunk_seqs": chunk_seqs_for(cfg.seq_len, cfg.chunk_tokens),
        }
        if coder is not None:
            identity.update(coder_kind=coder.kind, coder_hash=coder.content_hash, hook=resolve_hook(cfg, coder))
        precheck(identity)
    model = model or SubjectModel.load(cfg.model, cfg.device, cfg.dtype)
    if coder is None:
        coder = load_configured_coder(cfg, model)
    hook = resolve_hook(cfg, coder)
    model.check_hook(hook)
    check_width(coder, hook, model.hook_width(hook))
    coder.to(model.device)
    return CacheParts(model, coder, hook)


def load_parts(cfg: CacheConfig) -> CacheParts:
    """The model, coder and hook only, for a worker that encodes sequences it is sent (a cluster's shard worker):
    the driver already checked them and the corpus, which a worker never reads."""
    settle_hub_coder(cfg)
    model = SubjectModel.load(cfg.model, cfg.device, cfg.dtype)
    coder = load_configured_coder(cfg, model)
    hook = resolve_hook(cfg, coder)
    coder.to(model.device)
    return CacheParts(model, coder, hook)


MAX_CHUNK_TOKENS = 1 << 16  # chunk offsets are stored as uint16


def chunk_seqs_for(seq_len: int, chunk_tokens: int = MAX_CHUNK_TOKENS) -> int:
    """Whole sequences per chunk: as many as fit in `chunk_tokens` (offsets must fit uint16)."""
    return max(min(chunk_tokens, MAX_CHUNK_TOKENS) // seq_len, 1)


def provenance(parts: CacheParts, cfg: CacheConfig) -> dict:
    """What a cache is made of: the identity a database is checked against, and how it was made."""
    from dataclasses import asdict

    from autointerp.engine import versions

    vocab = parts.model.vocab_size
    return {
        "model": parts.model.name,
        "model_hash": parts.model.content_hash,
        "hook": parts.hook,
        "forward": parts.model.forward_kind(parts.hook),
        "forward_reason": parts.model.forward_reason(parts.hook),
        "forward_sites": PLAIN_SITES_VERSION,
        "model_type": parts.model.model_type,
        "start_rule": parts.model.start_rule,
        "coder_kind": parts.coder.kind,
        "coder_path": parts.coder.path,
        "coder_hash": parts.coder.content_hash,
        "num_latents": parts.coder.num_latents,
        "d_in": parts.coder.d_in,
        "corpus": cfg.corpus,
        "corpus_hash": corpus_hash(CorpusSpec.of(cfg)),
        "seq_len": cfg.seq_len,
        "n_tokens_target": cfg.n_tokens,
        "chunk_seqs": chunk_seqs_for(cfg.seq_len, cfg.chunk_tokens),
        "token_dtype": "uint16" if vocab <= 1 << 16 else "uint32",
        "vocab_size": vocab,
        "bos_token_id": parts.model.start_id,
        "seed": cfg.seed,
        "versions": versions.package_versions(),
        "config": asdict(cfg),
    }


def cache_site_problem(prov: dict | None) -> str | None:
    """One line when a database's activations come from a site the plain path read wrongly before the post-norm fix
    (model.stale_forward), else None. The model family is the one recorded, or for caches made before schema 11
    the one its model's config says (read without weights; None when the config cannot be read here)."""
    if not prov or not site_may_have_moved(prov):
        return None
    if prov.get("forward_stale"):
        return str(prov["forward_stale"])
    return stale_forward(prov, prov.get("model_type") or recorded_model_type(prov))


def recorded_model_type(prov: dict) -> str | None:
    """The config.model_type of the model a cache was made with, read from its config (no weights); None when the
    config cannot be read here."""
    import json

    spec = json.loads(prov.get("config") or "{}").get("model") or prov.get("model")
    return getattr(model_config(spec), "model_type", None) if spec else None
