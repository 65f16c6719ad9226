"""dictionary_learning checkpoints (saprmarks/dictionary_learning; SAEBench's SAEs): a folder with `ae.pt` (a torch
state dict) and `config.json` (`{"trainer": {"dict_class", "activation_dim", "dict_size", "k", "layer", "lm_name",
"submodule_name", ...}, "buffer": {...}}`).

The maths per `dict_class`, as dictionary_learning's own classes compute it (weights in our layout: W_enc [d, M],
W_dec [M, d]; the state dict's `nn.Linear` weights are stored transposed, `encoder.weight` [M, d], `decoder.weight`
[d, M]):
- AutoEncoder (SAEBench's "standard" and "panneal" sweeps): relu((x - bias) @ W_enc + b_enc); out f @ W_dec + bias.
- AutoEncoderNew (Anthropic's April update): relu(x @ W_enc + b_enc), no input subtraction; out f @ W_dec + b_dec.
- AutoEncoderTopK: the k largest of relu((x - b_dec) @ W_enc + b_enc) per row (the decoder bias IS subtracted
  first); the state dict's `threshold` is for its optional thresholded inference and is not used, as in SAELens.
- BatchTopKSAE, MatryoshkaBatchTopKSAE: trained with top-k over the batch, read at inference with their one learnt
  threshold: a = relu((x - b_dec) @ W_enc + b_enc), a * (a > threshold). A threshold never set (< 0) keeps every
  positive latent there; here the per-row top k is used instead.
- JumpReluAutoEncoder: relu(pre) * (pre > threshold), pre = x @ W_enc + b_enc, WITHOUT b_dec subtracted.
- GatedAutoEncoder: e = (x - decoder_bias) @ W_enc; (e + gate_bias > 0) * relu(exp(r_mag) * e + mag_bias).
Gated and JumpReLU once rescaled their latents by the decoder norms inside `encode` (dictionary_learning, Aug 2024 to
Jan 2025); neither does now, nor does SAELens's converter, nor this: for unit-norm decoders it is the same, and the
reconstruction (`decode`) is the same either way.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from .base import (
    CoderError,
    SparseActs,
    SparseCoder,
    check_shape,
    hash_files,
    nonzero_sparse,
    sparse_decode,
    topk_sparse,
)

# dict_class -> how it encodes
ARCHITECTURES = {
    "AutoEncoder": "relu",
    "AutoEncoderNew": "relu",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "batchtopk",
    "MatryoshkaBatchTopKSAE": "batchtopk",
    "JumpReluAutoEncoder": "jumprelu",
    "GatedAutoEncoder": "gated",
}

# submodule_name (dictionary_learning's demos and SAEBench write `resid_post_layer_N`) -> TransformerLens hook
_SUBMODULE = re.compile(r"(resid_post|resid_pre|mlp_out|mlp_output|attn_out|attn_output)_layer_(\d+)")
_HOOK_OF_SITE = {
    "resid_post": "hook_resid_post",
    "resid_pre": "hook_resid_pre",
    "mlp_out": "hook_mlp_out",
    "mlp_output": "hook_mlp_out",
    "attn_out": "hook_attn_out",
    "attn_output": "hook_attn_out",
}


def hook_from_name(name: str) -> str | None:
    """The hook a dictionary_learning site name says (`resid_post_layer_3` -> `blocks.3.hook_resid_post`; also inside
    a longer name, e.g. SAELens's id `resid_post_layer_3_trainer_1` or `blocks.3.hook_resid_post__trainer_0`)."""
    m = re.match(r"(blocks\.\d+\.hook_[a-z_]+?)(?:__|$)", name)
    if m:
        return m.group(1)
    m = _SUBMODULE.search(name)
    if m:
        return f"blocks.{int(m.group(2))}.{_HOOK_OF_SITE[m.group(1)]}"
    return None


def hook_of(trainer: dict) -> str | None:
    """The hook a config.json's trainer section names: its `submodule_name` when that says the site, else, with no
    submodule name at all, the residual stream after block `layer` (what SAELens assumes for these checkpoints).
    None when it cannot tell (an unknown submodule name): `hook` must be set then."""
    name = trainer.get("submodule_name")
    if isinstance(name, str) and name:
        return hook_from_name(name)
    layer = trainer.get("layer")
    if isinstance(layer, int) and not isinstance(layer, bool) and layer >= 0:
        return f"blocks.{layer}.hook_resid_post"
    return None


def read_config(path: Path, source: str | None = None) -> dict:
    """config.json's `trainer` section, with a dict_class autointerp can read (else one CoderError line)."""
    source = source or str(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CoderError(f"{source}: config.json is not valid JSON ({e})") from None
    trainer = cfg.get("trainer") if isinstance(cfg, dict) else None
    if not isinstance(trainer, dict):
        raise CoderError(f"{source}: config.json has no 'trainer' section (not a dictionary_learning checkpoint)")
    dict_class = trainer.get("dict_class")
    if dict_class not in ARCHITECTURES:
        raise CoderError(
            f"{source}: unsupported dictionary_learning dict_class {dict_class!r} "
            f"(supported: {', '.join(ARCHITECTURES)})"
        )
    return trainer


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """ae.pt's tensors. It is a pickle: torch.load with weights_only=True unpickles tensors and plain containers only
    and refuses anything else (a class, a function) without running it. Never a full pickle load."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        why = f"it holds {found.group(1)}, not only tensors" if found else "not a torch state dict"
        raise CoderError(f"{path}: refused ({why}; read with torch.load(weights_only=True), never unpickled)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CoderError(f"{path} is not a readable torch checkpoint ({first})") from None
    if not isinstance(state, dict):
        raise CoderError(f"{path}: expected a state dict (name -> tensor), found {type(state).__name__}")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}


def _first(w: dict, names: tuple[str, ...], src: str) -> tuple[str, torch.Tensor]:
    for name in names:
        if name in w:
            return name, w[name].float()
    raise CoderError(f"{src} has none of {', '.join(repr(n) for n in names)}")


class DictionaryLearningCoder(SparseCoder):
    # Set for the dict classes that have them (None otherwise): the JumpReLU / batch top-k threshold, the gated parts.
    threshold: Any = None
    b_enc: Any = None  # gated SAEs have none: their encoder's bias is the gate's and the magnitude's
    gate_bias: Any = None
    mag_bias: Any = None
    r_mag: Any = None

    def __init__(self, folder: Path):
        cfg_path, w_path = folder / "config.json", folder / "ae.pt"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CoderError(f"dictionary_learning checkpoint {folder} is missing {p.name}")
        trainer = read_config(cfg_path)
        self.dict_class = str(trainer["dict_class"])
        self.architecture = ARCHITECTURES[self.dict_class]
        w = load_state_dict(w_path)
        src = str(w_path)
        self._set_weights(w, src)
        num_latents, d_in = self.W_dec.shape
        for key, value in (("activation_dim", d_in), ("dict_size", num_latents)):
            if trainer.get(key) not in (None, value):
                raise CoderError(f"{cfg_path}: {key} {trainer[key]} disagrees with {w_path.name} ({value})")
        self.k = None
        if self.architecture in ("topk", "batchtopk"):
            k = w["k"].item() if "k" in w else trainer.get("k")  # a buffer since late 2024; config.json always
            if not isinstance(k, (int, float)) or isinstance(k, bool) or k < 1:
                raise CoderError(f"{cfg_path}: {self.dict_class} without a positive 'k'")
            self.k = int(k)
        super().__init__(
            kind="dictionary_learning",
            num_latents=num_latents,
            d_in=d_in,
            hook=hook_of(trainer),
            content_hash=hash_files([cfg_path, w_path]),
            path=str(folder),
        )

    def _set_weights(self, w: dict, src: str) -> None:
        # encoder: nn.Linear (`encoder.weight` [M, d]) or a parameter in SAELens's layout (`W_enc` [d, M])
        name, enc = _first(w, ("encoder.weight", "W_enc"), src)
        self.W_enc = enc.T.contiguous() if name == "encoder.weight" else enc
        d_in, num_latents = self.W_enc.shape
        # decoder: nn.Linear (`decoder.weight` [d, M]), `W_dec` [M, d], or July 2024's top-k `decoder` parameter [M, d]
        name, dec = _first(w, ("decoder.weight", "W_dec", "decoder"), src)
        self.W_dec = dec.T.contiguous() if name == "decoder.weight" else dec
        check_shape(self.W_dec, (num_latents, d_in), "W_dec" if name != "decoder.weight" else "decoder.weight.T", src)
        bias_names = {"relu": ("bias", "decoder.bias"), "gated": ("decoder_bias",)}.get(self.architecture, ("b_dec",))
        _, self.b_dec = _first(w, bias_names, src)
        check_shape(self.b_dec, (d_in,), "decoder bias", src)
        # AutoEncoderNew has a decoder.bias and subtracts nothing; JumpReLU subtracts nothing either
        self.subtract_b_dec = "decoder.bias" not in w and self.architecture != "jumprelu"
        self.b_enc = None
        if self.architecture != "gated":
            _, self.b_enc = _first(w, ("encoder.bias", "b_enc"), src)
            check_shape(self.b_enc, (num_latents,), "encoder bias", src)
        self.threshold = None
        if self.architecture in ("jumprelu", "batchtopk"):
            _, self.threshold = _first(w, ("threshold",), src)
            if self.architecture == "jumprelu":
                check_shape(self.threshold, (num_latents,), "threshold", src)
            elif self.threshold.numel() != 1:
                raise CoderError(f"{src}: 'threshold' of {self.dict_class} should be one number")
        # a batch top-k threshold never set in training (< 0) would keep every positive latent: top k per row then
        self.threshold_set = self.architecture != "batchtopk" or float(self.threshold) >= 0
        self.gate_bias = self.mag_bias = self.r_mag = None
        if self.architecture == "gated":
            _, self.gate_bias = _first(w, ("gate_bias",), src)
            _, self.mag_bias = _first(w, ("mag_bias",), src)
            _, self.r_mag = _first(w, ("r_mag",), src)
            for t, n in ((self.gate_bias, "gate_bias"), (self.mag_bias, "mag_bias"), (self.r_mag, "r_mag")):
                check_shape(t, (num_latents,), n, src)

    def encode(self, x: torch.Tensor) -> SparseActs:
        x = x.float()
        if self.subtract_b_dec:
            x = x - self.b_dec
        if self.architecture == "gated":
            e = x @ self.W_enc
            magnitude = torch.relu(self.r_mag.exp() * e + self.mag_bias)
            return nonzero_sparse(magnitude * (e + self.gate_bias > 0))
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            return topk_sparse(pre, int(self.k or 0))
        if self.architecture == "jumprelu":
            return nonzero_sparse(torch.relu(pre) * (pre > self.threshold))
        if self.architecture == "batchtopk":
            if not self.threshold_set:
                return topk_sparse(pre, int(self.k or 0))
            act = torch.relu(pre)
            return nonzero_sparse(act * (act > self.threshold))
        return nonzero_sparse(torch.relu(pre))

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """acts @ W_dec + the decoder bias (`bias`, `b_dec`, `decoder_bias` or `decoder.bias`, by class)."""
        return sparse_decode(acts, n_rows, self.W_dec) + self.b_dec

    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec
