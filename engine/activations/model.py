"""The subject model, run through TransformerLens 4.x `TransformerBridge`.

Only the layers up to the hooked one run (`stop_at_layer`) and only the hooked activation is
kept (`names_filter`). fp32 on CPU (bf16 is several times slower on CPUs without bf16 units),
CUDA when available.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autointerp.engine.defaults import EMBEDDED_MODEL_NAME, smollm2_gguf

from .model_files import ModelError, gguf_as_safetensors

log = logging.getLogger(__name__)


# Hook points we support, TransformerLens style, with the block they belong to.
HOOK_PATTERNS = {
    r"blocks\.(\d+)\.hook_resid_pre": "residual stream entering block N",
    r"blocks\.(\d+)\.hook_resid_mid": "residual stream between attention and MLP",
    r"blocks\.(\d+)\.hook_resid_post": "residual stream leaving block N",
    r"blocks\.(\d+)\.hook_mlp_out": "MLP output",
    r"blocks\.(\d+)\.hook_attn_out": "attention output",
    r"blocks\.(\d+)\.mlp\.hook_post": "MLP neurons (hidden activations)",
    r"blocks\.(\d+)\.mlp\.hook_in": "MLP input (what transcoders read)",
    r"blocks\.(\d+)\.attn\.hook_z": "attention heads' outputs, concatenated head by head (what attention SAEs read)",
    r"blocks\.(\d+)\.attn\.hook_out": "the attention module's own output (before a post-norm, where the family has one)",
    r"blocks\.(\d+)\.mlp\.hook_out": "the MLP module's own output (before a post-norm, where the family has one)",
}


def hook_from_module_path(path: str, transcoder: bool = False, post_norm: bool = False) -> str:
    """Translate sparsify's Hugging Face module paths (`layers.N`, `layers.N.mlp`) to hook names. A module path
    means that module's own output: in a post-norm family (Gemma-2/3, OLMo-2: `post_norm`) that is before the
    block's post-norm, TransformerLens's `mlp.hook_out` / `attn.hook_out`, not `hook_mlp_out` / `hook_attn_out`
    (elsewhere the two are the same values, and the latter names are kept)."""
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)(\.mlp|\.self_attn)?", path)
    if not m:
        return path
    n, sub = m.group(1), m.group(2)
    if sub is None:
        return f"blocks.{n}.hook_resid_post"
    if sub == ".mlp":
        if transcoder:
            return f"blocks.{n}.mlp.hook_in"
        return f"blocks.{n}.mlp.hook_out" if post_norm else f"blocks.{n}.hook_mlp_out"
    return f"blocks.{n}.attn.hook_out" if post_norm else f"blocks.{n}.hook_attn_out"


def hook_layer(hook: str) -> int:
    for pattern in HOOK_PATTERNS:
        m = re.fullmatch(pattern, hook)
        if m:
            return int(m.group(1))
    known = "; ".join(p.replace(r"(\d+)", "N").replace("\\", "") for p in HOOK_PATTERNS)
    raise ModelError(f"unknown hook point {hook!r} (supported: {known}, or layers.N / layers.N.mlp)")


def check_hook_layer(hook: str, n_layers: int) -> int:
    layer = hook_layer(hook)
    if layer >= n_layers:
        raise ModelError(f"hook {hook!r}: the model has only {n_layers} blocks (0..{n_layers - 1})")
    return layer


def hook_width_of(hook: str, shape: "ModelShape") -> int:
    if hook.endswith("mlp.hook_post"):
        return shape.d_mlp
    if hook.endswith("attn.hook_z"):
        return shape.d_attn
    return shape.d_model


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    d_model: int
    d_mlp: int
    d_attn: int  # n_heads x d_head: the width of attn.hook_z (not d_model in Gemma, Qwen3 and others)

    @classmethod
    def of_config(cls, cfg) -> "ModelShape":
        heads = int(cfg.num_attention_heads)
        d_head = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        return cls(
            int(cfg.num_hidden_layers),
            int(cfg.hidden_size),
            int(getattr(cfg, "intermediate_size", None) or 4 * cfg.hidden_size),  # GPT-2's n_inner may be None
            heads * int(d_head),
        )


def model_config(spec: str):
    """A model's transformers config alone (no weights loaded); None when it cannot be read here (loading the
    model then says why)."""
    from transformers import AutoConfig

    try:
        folder, revision = split_revision(resolve_model_folder(spec)[0])
        return AutoConfig.from_pretrained(folder, revision=revision)
    except ModelError:
        raise
    except Exception:  # noqa: BLE001 - any reason to fail is reported by the model load that follows
        return None


def model_shape(spec: str) -> ModelShape | None:
    """Blocks and widths of a model from its config alone; None when the config cannot be read here."""
    cfg = model_config(spec)
    try:
        return None if cfg is None else ModelShape.of_config(cfg)
    except (AttributeError, TypeError):  # a config without the usual fields: the model load says more
        return None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)") from None


def split_revision(spec: str) -> tuple[str, str | None]:
    """`ORG/NAME@REVISION` (a branch, tag or commit on the Hugging Face hub) -> (ORG/NAME, REVISION); a spec
    without `@`, or a local path that exists, has no revision."""
    if "@" not in spec or Path(spec).expanduser().exists():
        return spec, None
    name, _, revision = spec.rpartition("@")
    if not name or not revision:
        raise ModelError(f"model {spec!r}: write a pinned hub revision as ORG/NAME@REVISION")
    return name, revision


def resolve_model_folder(spec: str) -> tuple[str, str, str]:
    """A model spec -> (folder or HF id transformers can load, display name, content hash or "").
    Specs: "embedded", a .gguf file, `tiny:FAMILY` (engine/activations/tiny.py), a local folder, or a hub id
    with an optional pinned `@REVISION` (the display name keeps it, so the revision is recorded with a cache)."""
    if spec.startswith("tiny:"):
        from .tiny import tiny_model_folder

        folder, digest = tiny_model_folder(spec)
        return str(folder), spec, digest
    if spec == "embedded":
        folder, digest = gguf_as_safetensors(smollm2_gguf())
        return str(folder), EMBEDDED_MODEL_NAME, digest
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        folder, digest = gguf_as_safetensors(path)
        return str(folder), str(path), digest
    return spec, spec, ""


def model_display_name(spec: str) -> str:
    """The name a model spec is recorded under (as `resolve_model_folder` gives it), without loading anything."""
    if spec == "embedded":
        return EMBEDDED_MODEL_NAME
    if spec.endswith(".gguf"):
        return str(Path(spec).expanduser())
    return spec


def load_tokenizer(spec: str):
    """Only the subject model's tokenizer (to show cached token ids as text), without the weights."""
    from transformers import AutoTokenizer

    folder, _, _ = resolve_model_folder(spec)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # OSError, ValueError, hub errors...: one line names the model
        raise ModelError(
            f"cannot load the tokenizer of {spec!r} ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def start_tokens(tok) -> tuple[int | None, int | None, str]:  # (None, None, "") when it has neither
    """One start-token convention for every tokenizer: (start id, separator id, the rule as recorded).

    Position 0 of every cached sequence is the tokenizer's BOS token, whatever the tokenizer would add by itself
    (the corpus is tokenised without special tokens: Gemma's and Llama's tokenizers add a BOS, GPT-2's and
    Qwen's none), and documents are separated by its EOS token. A tokenizer without a BOS token starts with its
    EOS token (Qwen); GPT-2's and Pythia's BOS is their EOS, <|endoftext|>."""
    bos, eos = tok.bos_token_id, tok.eos_token_id
    sep = eos if eos is not None else bos
    if bos is not None:
        same = " (= EOS)" if bos == eos else ""
        return int(bos), sep, f"bos: {tok.convert_ids_to_tokens(int(bos))!s}{same}"
    if eos is None:
        return None, None, ""
    return int(eos), int(eos), f"eos (no BOS token): {tok.convert_ids_to_tokens(int(eos))!s}"


class _Stop(Exception):
    """Raised by the capturing hook of the hot path: the blocks after the hooked one never run."""


@dataclass(frozen=True)
class PlainLayout:
    """Where TransformerLens's hooks sit among one family's own HF modules, so the cache's hot path can read them
    without the bridge. `blocks`: the blocks' ModuleList from the CausalLM; `sites`: hook (without `blocks.N.`) ->
    (module path inside the block, "" for the block itself; "in" for the module's input, "out" for its output)."""

    blocks: str
    sites: dict[str, tuple[str, str]]


_PRE_NORM = PlainLayout(
    "model.layers",
    {
        "hook_resid_pre": ("", "in"),
        "hook_resid_post": ("", "out"),
        "hook_attn_out": ("self_attn", "out"),  # after o_proj: what the block adds to the residual stream
        "hook_mlp_out": ("mlp", "out"),
        "mlp.hook_in": ("mlp", "in"),  # what a transcoder reads: the normalised residual entering the MLP
        "mlp.hook_post": ("mlp.down_proj", "in"),  # the MLP's neurons
        "attn.hook_z": ("self_attn.o_proj", "in"),  # the heads' outputs, concatenated head by head
        "attn.hook_out": ("self_attn", "out"),
        "mlp.hook_out": ("mlp", "out"),
    },
)
# Gemma-2/3 and OLMo-2 normalise the attention and MLP outputs inside the block before adding them to the
# residual stream; TransformerLens's hook_attn_out / hook_mlp_out are after those norms, the submodules' own
# outputs before them (reading the submodules was the cause of wrong Gemma caches before PLAIN_SITES_VERSION 2).
_POST_NORM = PlainLayout(
    "model.layers",
    dict(
        _PRE_NORM.sites,
        hook_attn_out=("post_attention_layernorm", "out"),
        hook_mlp_out=("post_feedforward_layernorm", "out"),
    ),
)
_GPT2 = PlainLayout(
    "transformer.h",
    {
        "hook_resid_pre": ("", "in"),
        "hook_resid_post": ("", "out"),
        "hook_attn_out": ("attn", "out"),
        "hook_mlp_out": ("mlp", "out"),
        "mlp.hook_in": ("mlp", "in"),
        "mlp.hook_post": ("mlp.c_proj", "in"),
        "attn.hook_z": ("attn.c_proj", "in"),
        "attn.hook_out": ("attn", "out"),
        "mlp.hook_out": ("mlp", "out"),
    },
)
_GPT_NEOX = PlainLayout(
    "gpt_neox.layers",
    {
        "hook_resid_pre": ("", "in"),
        "hook_resid_post": ("", "out"),
        "hook_attn_out": ("attention", "out"),
        "hook_mlp_out": ("mlp", "out"),
        "mlp.hook_in": ("mlp", "in"),
        "mlp.hook_post": ("mlp.dense_4h_to_h", "in"),
        "attn.hook_z": ("attention.dense", "in"),
        "attn.hook_out": ("attention", "out"),
        "mlp.hook_out": ("mlp", "out"),
    },
)
# config.model_type -> layout. Each family here is proven against TransformerLens at every hook by
# tests/test_families.py; a model type not listed tries the pre-norm layout, and like every plain site it is used
# only when it matches TransformerLens on a probe (SubjectModel.forward_choice).
PLAIN_LAYOUTS = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "phi3": _PRE_NORM,
    "gemma2": _POST_NORM,
    "gemma3_text": _POST_NORM,
    "olmo2": _POST_NORM,
    "gpt2": _GPT2,
    "gpt_neox": _GPT_NEOX,
}
# Recorded with a cache (provenance `forward_sites`). Version 2 fixed the post-norm families' attention and MLP
# outputs; a cache recorded "plain" without a version was made by version 1 (see stale_forward).
PLAIN_SITES_VERSION = "2"
POST_NORM_TYPES = frozenset(t for t, layout in PLAIN_LAYOUTS.items() if layout is _POST_NORM)

# How far the plain path may sit from TransformerLens's value and still count as the same activation: relative to the
# largest value on the probe, by the dtype both run in (float32 agrees to ~1e-6 on every family tested).
PLAIN_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


@dataclass(frozen=True)
class ForwardChoice:
    kind: str  # "plain" | "bridge"
    reason: str  # one line: why this forward serves the hook


def site_may_have_moved(prov: dict) -> bool:
    """Whether a cache's plain-path site was read differently before PLAIN_SITES_VERSION 2 for some family: an
    attention or MLP output cached plainly by version 1. Only then does its model family matter."""
    return (
        prov.get("forward") == "plain"
        and not prov.get("forward_sites")
        and re.fullmatch(r"blocks\.\d+\.hook_(attn|mlp)_out", str(prov.get("hook"))) is not None
    )


def stale_forward(prov: dict, model_type: str | None) -> str | None:
    """One line when a cache's activations come from a site the plain path read wrongly before PLAIN_SITES_VERSION
    2 (the attention or MLP output of a post-norm family, before its norm), else None. `model_type`: the model's
    config.model_type, recorded with caches since that version, read from the model's config for older ones."""
    if not site_may_have_moved(prov):
        return None
    if model_type is None:
        return (
            f"cannot tell whether the activations at {prov.get('hook')} come from the right site: the cache predates "
            "the Gemma-2/3 and OLMo-2 fix and its model's config cannot be read here"
        )
    if model_type not in POST_NORM_TYPES:
        return None
    return (
        f"the activations at {prov.get('hook')} come from the wrong site ({model_type}: before the block's post-norm, "
        "cached before autointerp fixed it) and must be recomputed: `autointerp batch --redo cache` or a new --db"
    )


def plain_twin(hf_model):
    """A second module tree over the same parameters and buffers (no tensor is copied): TransformerLens's bridge
    replaces the HF model's modules in place with its own wrappers, and this keeps the plain ones for the cache's
    hot path."""
    import copy
    import itertools

    memo = {id(t): t for t in itertools.chain(hf_model.parameters(), hf_model.buffers())}
    return copy.deepcopy(hf_model, memo)


def _submodule(root, path: str):
    for part in path.split(".") if path else ():
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


@dataclass
class SubjectModel:
    bridge: Any  # a TransformerLens TransformerBridge
    tokenizer: Any
    name: str
    content_hash: str
    device: torch.device
    n_layers: int
    d_model: int
    d_mlp: int
    vocab_size: int
    start_id: int  # token at position 0 of every sequence
    sep_id: int  # token placed between documents
    plain: Any = None  # the HF model with its own modules (plain_twin), for the cache's hot path
    dtype: torch.dtype = torch.float32
    revision: str = ""  # the hub revision asked for ("" = a local folder, or the hub's main branch)
    start_rule: str = ""  # how the start token was chosen (recorded with a cache)
    _choices: dict = field(default_factory=dict, repr=False)  # hook -> ForwardChoice, decided once

    @classmethod
    def load(cls, spec: str = "embedded", device: str = "auto", dtype: str = "auto") -> "SubjectModel":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        folder, name, digest = resolve_model_folder(spec)
        folder, revision = split_revision(folder)
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt, revision=revision)
            tok = AutoTokenizer.from_pretrained(str(folder), revision=revision)
        except Exception as e:  # OSError, ValueError, hub errors...: one line names the model
            raise ModelError(f"cannot load model {spec!r} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if not digest:
            digest = hub_commit(folder, revision) or _folder_hash(Path(folder))
        from transformer_lens.model_bridge import TransformerBridge

        plain = plain_twin(hf_model).eval()
        bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tok, device=str(dev), dtype=dt, revision=revision
        )
        bridge.eval()
        plain.to(dev)  # buffers the bridge moved were replaced, not shared (parameters are moved in place)
        cfg = hf_model.config
        shape = ModelShape.of_config(cfg)  # the one reading of widths from a config (model_shape reads it too)
        start, sep, rule = start_tokens(tok)
        if start is None or sep is None:
            raise ModelError(f"model {spec!r}: tokenizer has neither a BOS nor an EOS token")
        return cls(
            bridge=bridge,
            tokenizer=tok,
            name=name,
            content_hash=digest,
            device=dev,
            n_layers=shape.n_layers,
            d_model=shape.d_model,
            d_mlp=shape.d_mlp,
            vocab_size=int(cfg.vocab_size),
            start_id=int(start),
            sep_id=int(sep),
            plain=plain,
            dtype=dt,
            revision=revision or "",
            start_rule=rule,
        )

    # ---- hooks ----------------------------------------------------------------------------

    def check_hook(self, hook: str) -> int:
        layer = check_hook_layer(hook, self.n_layers)
        if hook not in self.bridge.hook_dict:
            raise ModelError(f"hook {hook!r} is not served by this model's TransformerLens bridge")
        return layer

    @property
    def shape(self) -> ModelShape:
        return ModelShape.of_config(self.plain.config)

    @property
    def model_type(self) -> str:
        return str(self.plain.config.model_type)

    def hook_width(self, hook: str) -> int:
        return hook_width_of(hook, self.shape)

    def _plain_site(self, hook: str):
        """(module, "in" | "out") of the plain HF module whose input or output is `hook` in this family's layout, or
        None where the layout has no such site (resid_mid, or a hook read inside attention or a norm)."""
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook)
        layout = PLAIN_LAYOUTS.get(self.model_type, _PRE_NORM)
        if m is None or m.group(2) not in layout.sites or self.plain is None:
            return None
        blocks = _submodule(self.plain, layout.blocks)
        if blocks is None or int(m.group(1)) >= len(blocks):
            return None
        path, kind = layout.sites[m.group(2)]
        module = _submodule(blocks[int(m.group(1))], path)
        return None if module is None else (module, kind)

    def forward_choice(self, hook: str) -> ForwardChoice:
        """Which forward serves `hook` by default, and why. The plain HF forward (a hook on the family's own module,
        stopped there: ~34% faster) only where this family's layout has a site for the hook AND that site gives
        TransformerLens's value on a probe within the dtype's tolerance; else TransformerLens's bridge. Decided once
        per hook; recorded with a cache (provenance "forward"), which resumes with the forward it began with."""
        if hook in self._choices:
            return self._choices[hook]
        family = self.model_type
        known = family in PLAIN_LAYOUTS
        if self._plain_site(hook) is None:
            why = "its layout has no plain module for this hook" if known else "no plain layout is known for it"
            choice = ForwardChoice("bridge", f"TransformerLens bridge: {family} {why}")
        else:
            # A fixed probe: the start token, then token ids spread over the vocabulary, two rows.
            n = 24
            probe = (torch.arange(2 * n).reshape(2, n) * 7919 + 13) % self.vocab_size
            probe[:, 0] = self.start_id
            plain = self._plain_activations(probe, hook).float()
            ref = self._bridge_activations(probe, hook).float()
            diff = float((plain - ref).abs().max()) if plain.shape == ref.shape else float("inf")
            scale = max(float(ref.abs().max()), 1e-6)
            tol = PLAIN_TOLERANCE.get(self.dtype, 3e-2)
            layout = f"{family} layout" if known else f"{family} (an unlisted family, read as pre-norm)"
            if diff <= tol * scale:
                choice = ForwardChoice(
                    "plain", f"plain HF forward: {layout}, equal to TransformerLens on a probe (max |diff| {diff:.1e})"
                )
            else:
                choice = ForwardChoice(
                    "bridge",
                    f"TransformerLens bridge: the plain {layout} site differs from TransformerLens on a probe "
                    f"(max |diff| {diff:.2g} on values up to {scale:.2g})",
                )
        log.info("forward for %s: %s", hook, choice.reason)
        self._choices[hook] = choice
        return choice

    def forward_kind(self, hook: str) -> str:
        """ "plain" or "bridge": the forward `hook_activations` takes for `hook` by default (see forward_choice)."""
        return self.forward_choice(hook).kind

    def forward_reason(self, hook: str) -> str:
        return self.forward_choice(hook).reason

    def hook_activations(self, tokens: torch.Tensor, hook: str, via_bridge: bool = False) -> torch.Tensor:
        """[B, T] token ids -> [B, T, width] activations at `hook`, running only the blocks needed.

        The hot path: a forward hook on the plain HF module, raising to stop the forward right there, so caching
        costs what a plain HF forward to the layer costs. `via_bridge`, and any hook the plain path does not serve
        exactly (forward_choice), use TransformerLens. attn.hook_z comes as [B, T, n_heads x d_head], the heads
        concatenated head by head (SAELens's order) on either path."""
        if via_bridge or self.forward_kind(hook) == "bridge":
            return self._bridge_activations(tokens, hook)
        return self._plain_activations(tokens, hook)

    def _bridge_activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        _, cache = self.bridge.run_with_cache(
            tokens.to(self.device), names_filter=hook, stop_at_layer=hook_layer(hook) + 1, return_cache_object=False
        )
        acts = cache[hook]
        return acts.flatten(-2) if hook.endswith("attn.hook_z") else acts  # [B, T, heads, d_head] -> heads x d_head

    def _plain_activations(self, tokens: torch.Tensor, hook: str) -> torch.Tensor:
        site = self._plain_site(hook)
        if site is None:
            raise ModelError(f"hook {hook!r} has no plain site in the {self.model_type} layout")
        module, kind = site
        got: dict[str, torch.Tensor] = {}

        def grab(value) -> None:
            got["x"] = value[0] if isinstance(value, tuple) else value
            raise _Stop

        if kind == "out":
            handle = module.register_forward_hook(lambda m, args, out: grab(out))
        else:  # the module's input: a block's hidden states, the MLP's input, or the input of its output projection
            handle = module.register_forward_pre_hook(
                lambda m, args, kwargs: grab(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
            )
        try:
            with torch.no_grad():  # activations are data, never part of a graph (as run_with_cache gives them)
                self.plain(tokens.to(self.device), use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return got["x"]

    def residual_directions(self, hook: str, directions: torch.Tensor) -> torch.Tensor:
        """Directions in `hook`'s space -> the residual-stream directions they write: through the attention's
        output weights W_O for attn.hook_z (the logit lens of an attention SAE's latent), through the MLP's W_out for
        mlp.hook_post (an SAE over neurons), unchanged elsewhere (the residual stream's own width). The post-norms
        of Gemma-2/3 and OLMo-2 are left out: a direction's lens is the linear path, as for every other family."""
        if hook.endswith("attn.hook_z"):
            w = self.bridge.blocks[hook_layer(hook)].attn.W_O.flatten(0, 1)  # [heads x d_head, d_model]
        elif hook.endswith("mlp.hook_post"):
            w = self.bridge.blocks[hook_layer(hook)].mlp.W_out  # [d_mlp, d_model]
        else:
            return directions
        return directions.float() @ w.detach().float().to(directions.device)

    def forward_to(self, tokens: torch.Tensor, layer: int, via_bridge: bool = False) -> None:
        """Bare forward through blocks 0..layer and no further, nothing kept (the benchmark's references): the plain
        HF model stopped after the block, or the bridge's forward with stop_at_layer."""
        if via_bridge or self._plain_site(f"blocks.{layer}.hook_resid_post") is None:
            self.bridge(tokens.to(self.device), stop_at_layer=layer + 1)
            return
        self._plain_activations(tokens, f"blocks.{layer}.hook_resid_post")


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub model id (at `revision`, else main) resolved to in the local Hugging Face cache, which the
    load just filled (or, offline, read): the snapshot folder's name. None for a local folder."""
    if Path(repo_id).expanduser().exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - an id huggingface_hub cannot parse: no commit to record
        return None
    return Path(found).parent.name if isinstance(found, str) else None


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256(str(folder).encode())
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file():
                h.update(f.name.encode() + str(f.stat().st_size).encode())
    return h.hexdigest()[:16]
