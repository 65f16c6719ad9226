"""SAELens checkpoints (`cfg.json` + `sae_weights.safetensors`) and Gemma Scope `params.npz`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .base import (
    CoderError,
    SparseActs,
    SparseCoder,
    check_shape,
    hash_files,
    nonzero_sparse,
    require,
    sparse_decode,
    topk_sparse,
)
from .weights import load_npz, load_safetensors


class _EncoderDecoderCoder(SparseCoder):
    """Shared math of SAELens-layout weights: W_enc [d, M], b_enc [M], W_dec [M, d], b_dec [d]."""

    def _set_weights(self, w: dict, src: str, need_threshold: bool) -> tuple[int, int]:
        self.W_enc = require(w, "W_enc", src).float()
        d_in, num_latents = self.W_enc.shape
        self.b_enc = require(w, "b_enc", src).float()
        self.W_dec = require(w, "W_dec", src).float()
        self.b_dec = require(w, "b_dec", src).float()
        check_shape(self.b_enc, (num_latents,), "b_enc", src)
        check_shape(self.W_dec, (num_latents, d_in), "W_dec", src)
        check_shape(self.b_dec, (d_in,), "b_dec", src)
        self.threshold = None
        if need_threshold:
            if "threshold" in w:
                self.threshold = w["threshold"].float()
            elif "log_threshold" in w:
                self.threshold = w["log_threshold"].float().exp()
            else:
                raise CoderError(f"{src} has no 'threshold' (needed for JumpReLU)")
            check_shape(self.threshold, (num_latents,), "threshold", src)
        return d_in, num_latents

    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """acts @ W_dec + b_dec."""
        return sparse_decode(acts, n_rows, self.W_dec) + self.b_dec


class SAELensCoder(_EncoderDecoderCoder):
    ARCHITECTURES = ("standard", "jumprelu", "topk")
    NORMALISATIONS = ("none", None, "constant_norm_rescale", "expected_average_only_in", "layer_norm")

    def __init__(self, folder: Path):
        cfg_path, w_path = folder / "cfg.json", folder / "sae_weights.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CoderError(f"SAELens checkpoint {folder} is missing {p.name}")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CoderError(f"{cfg_path} is not valid JSON ({e})") from None
        meta = cfg.get("metadata") or {}
        arch = cfg.get("architecture", "standard")
        act_fn = cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu"
        if arch == "standard" and act_fn == "topk":  # older flat cfgs say top-k this way
            arch = "topk"
        if arch not in self.ARCHITECTURES:
            raise CoderError(
                f"{cfg_path}: unsupported SAELens architecture {arch!r} (supported: {', '.join(self.ARCHITECTURES)})"
            )
        self.architecture = arch
        self.k = cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k")
        if arch == "topk" and not self.k:
            raise CoderError(f"{cfg_path}: topk architecture without 'k'")
        self.apply_b_dec_to_input = bool(cfg.get("apply_b_dec_to_input", True))
        self.normalize = cfg.get("normalize_activations", "none")
        if self.normalize not in self.NORMALISATIONS:
            raise CoderError(f"{cfg_path}: unsupported normalize_activations {self.normalize!r}")
        self.scaling_factor = cfg.get("norm_scaling_factor") or cfg.get("scaling_factor")
        if self.normalize == "expected_average_only_in" and not self.scaling_factor:
            raise CoderError(f"{cfg_path}: expected_average_only_in needs 'norm_scaling_factor' in cfg.json")
        w = load_safetensors(w_path)
        d_in, num_latents = self._set_weights(w, str(w_path), need_threshold=arch == "jumprelu")
        if cfg.get("d_in") not in (None, d_in) or cfg.get("d_sae") not in (None, num_latents):
            raise CoderError(f"{cfg_path}: d_in/d_sae disagree with W_enc {tuple(self.W_enc.shape)}")
        super().__init__(
            kind="saelens",
            num_latents=num_latents,
            d_in=d_in,
            hook=cfg.get("hook_name") or meta.get("hook_name"),
            content_hash=hash_files([cfg_path, w_path]),
            path=str(folder),
        )

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "constant_norm_rescale":
            return x * (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True).clamp_min(1e-8))
        if self.normalize == "expected_average_only_in":
            return x * float(self.scaling_factor)
        if self.normalize == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.var(dim=-1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return x

    def _denormalise(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """SAELens's output normalisation: the input's undone. constant_norm_rescale divides by the row's scale
        (sqrt(d_in) / |x|) and expected_average_only_in by its constant factor. layer_norm cannot be undone from
        the latents alone (the row's mean and spread were divided out before encoding): SAELens multiplies back
        the mean and standard deviation it stored on the way in, and so does this, from `x`."""
        if self.normalize in ("none", None):
            return out
        if self.normalize == "expected_average_only_in":
            return out / float(self.scaling_factor)
        if x is None:
            raise ValueError(f"undoing SAELens's {self.normalize} needs the input rows it encoded (x)")
        x = x.float()
        if self.normalize == "constant_norm_rescale":
            return out * (x.norm(dim=-1, keepdim=True).clamp_min(1e-8) / math.sqrt(self.d_in))
        mean = x.mean(dim=-1, keepdim=True)  # layer_norm: the stored mean / std per row, as _normalise made them
        std = (x.var(dim=-1, keepdim=True, unbiased=False) + 1e-5).sqrt()
        return out * std + mean

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """acts @ W_dec + b_dec, then the input normalisation undone (`_denormalise`)."""
        return self._denormalise(super().decode(acts, n_rows, x), x)

    def encode(self, x: torch.Tensor) -> SparseActs:
        x = self._normalise(x)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "topk":
            return topk_sparse(pre, int(self.k or 0))  # k is checked at load for topk
        if self.architecture == "jumprelu":
            return nonzero_sparse(torch.relu(pre) * (pre > self.threshold))
        return nonzero_sparse(torch.relu(pre))


class GemmaScopeCoder(_EncoderDecoderCoder):
    """Gemma Scope `params.npz`: JumpReLU with no decoder-bias subtraction from the input."""

    def __init__(self, path: Path, hook: str | None):
        if not path.is_file():
            raise CoderError(f"Gemma Scope checkpoint {path} does not exist")
        w = load_npz(path)
        d_in, num_latents = self._set_weights(w, str(path), need_threshold=True)
        super().__init__(
            kind="gemmascope",
            num_latents=num_latents,
            d_in=d_in,
            hook=hook,
            content_hash=hash_files([path]),
            path=str(path),
        )

    def encode(self, x: torch.Tensor) -> SparseActs:
        pre = x @ self.W_enc + self.b_enc
        return nonzero_sparse(torch.relu(pre) * (pre > self.threshold))
