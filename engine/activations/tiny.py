"""Tiny random-weight models of every architecture family we claim, built offline from their transformers configs.

`tiny:FAMILY` is a model spec like any other (`autointerp check --model tiny:gemma2`, `bench cache --model
tiny:gpt2`): the family's config class with 64 hidden units and 3 blocks, random weights from a fixed seed, saved
once to the model cache beside the embedded tokenizer (SmolLM2's, 49,152 tokens, so every family reads the same
text). They exist to prove activations against TransformerLens on every family without a download; their
activations mean nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autointerp.store.errors import UserError

TINY_PREFIX = "tiny:"
VOCAB = 49_152  # the embedded tokenizer's
HIDDEN, LAYERS, HEADS, KV_HEADS, MLP = 64, 3, 4, 2, 128


def _family(config_cls: str, **base) -> Callable[..., Any]:
    """A family's config maker: `config_cls(**base)`, with any key overridden (the token ids, the block count)."""

    def make(**over):
        import transformers

        return getattr(transformers, config_cls)(**{**base, **over})

    return make


_LLAMA_LIKE = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=MLP,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    max_position_embeddings=512,
)
_GEMMA = dict(_LLAMA_LIKE, head_dim=16, query_pre_attn_scalar=16, sliding_window=16)

# family -> its config, as the families' own model cards set the parts that change the block's wiring (post-norms,
# GQA, explicit head_dim, Pythia's parallel residual with partial rotary).
TINY_FAMILIES: dict[str, Callable[..., Any]] = {
    "gpt2": _family("GPT2Config", vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=512),
    "gpt_neox": _family(
        "GPTNeoXConfig",
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=512,
        rotary_pct=0.25,  # Pythia's
    ),
    "llama": _family("LlamaConfig", **_LLAMA_LIKE),
    "mistral": _family("MistralConfig", **_LLAMA_LIKE, sliding_window=None),
    "qwen2": _family("Qwen2Config", **_LLAMA_LIKE),
    "qwen3": _family("Qwen3Config", **_LLAMA_LIKE, head_dim=16),
    "phi3": _family("Phi3Config", **_LLAMA_LIKE, pad_token_id=0),
    "olmo2": _family("Olmo2Config", **_LLAMA_LIKE),
    "gemma2": _family("Gemma2Config", **_GEMMA),
    "gemma3": _family("Gemma3TextConfig", **_GEMMA),
}


def tiny_model_folder(spec: str) -> tuple[Path, str]:
    """`tiny:FAMILY` -> (a saved model folder with the embedded tokenizer, its content digest), built once."""
    family = spec[len(TINY_PREFIX) :]
    if family not in TINY_FAMILIES:
        raise UserError(f"unknown tiny model family {family!r} (known: {', '.join(TINY_FAMILIES)})")
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autointerp.engine.defaults import smollm2_gguf

    from .model_files import cache_root, gguf_as_safetensors

    embedded, _ = gguf_as_safetensors(smollm2_gguf())
    tok = AutoTokenizer.from_pretrained(str(embedded))
    cfg = TINY_FAMILIES[family](bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    recipe = json.dumps([family, cfg.to_dict(), transformers.__version__], sort_keys=True, default=str)
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    target = cache_root() / "models" / f"tiny-{family}-{digest}"
    if (target / "config.json").exists():
        return target, digest
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)  # atomic, as gguf_as_safetensors: a half-written folder is never used
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, digest
