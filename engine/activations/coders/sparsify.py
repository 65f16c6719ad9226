"""EleutherAI sparsify checkpoints: `cfg.json` + `sae.safetensors` in a folder named after the hookpoint."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .base import CoderError, SparseActs, SparseCoder, check_shape, hash_files, require, sparse_decode, topk_sparse
from .weights import load_safetensors


class SparsifyCoder(SparseCoder):
    def __init__(self, folder: Path):
        cfg_path, w_path = folder / "cfg.json", folder / "sae.safetensors"
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise CoderError(f"sparsify checkpoint {folder} is missing {p.name}")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CoderError(f"{cfg_path} is not valid JSON ({e})") from None
        w = load_safetensors(w_path)
        src = str(w_path)
        W_enc = require(w, "encoder.weight", src).float()
        num_latents, d_in = W_enc.shape
        if cfg.get("d_in") not in (None, d_in):
            raise CoderError(f"{cfg_path}: d_in {cfg['d_in']} disagrees with encoder.weight {tuple(W_enc.shape)}")
        self.W_enc = W_enc
        self.b_enc = require(w, "encoder.bias", src).float()
        self.W_dec = require(w, "W_dec", src).float()
        self.b_dec = require(w, "b_dec", src).float()
        check_shape(self.b_enc, (num_latents,), "encoder.bias", src)
        check_shape(self.W_dec, (num_latents, d_in), "W_dec", src)
        check_shape(self.b_dec, (d_in,), "b_dec", src)
        # A skip transcoder adds x @ W_skip.T (a linear path from the MLP input) to its decoder's output.
        self.W_skip = w["W_skip"].float() if "W_skip" in w else None
        if self.W_skip is not None:
            check_shape(self.W_skip, (self.W_dec.shape[1], d_in), "W_skip", src)
        self.k = int(cfg.get("k", 32))
        self.activation = cfg.get("activation", "topk")
        if self.activation not in ("topk", "groupmax"):
            raise CoderError(f"{cfg_path}: unknown activation {self.activation!r}")
        if self.activation == "groupmax" and num_latents % self.k:
            raise CoderError(f"{cfg_path}: groupmax needs num_latents divisible by k")
        transcode = bool(cfg.get("transcode", False))
        super().__init__(
            kind="sparsify",
            num_latents=num_latents,
            d_in=d_in,
            hook=folder.name,
            content_hash=hash_files([cfg_path, w_path]),
            path=str(folder),
            transcoder=transcode,
        )

    def encode(self, x: torch.Tensor) -> SparseActs:
        # Transcoders read the MLP input as is; SAEs subtract the decoder bias first.
        sae_in = x if self.transcoder else x - self.b_dec
        pre = torch.relu(sae_in @ self.W_enc.T + self.b_enc)
        if self.activation == "topk":
            return topk_sparse(pre, self.k)
        group = self.num_latents // self.k
        vals, idx = pre.unflatten(-1, (self.k, group)).max(dim=-1)
        idx = idx + torch.arange(0, self.num_latents, group, device=x.device)
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1).expand_as(idx)
        keep = vals > 0
        return SparseActs(rows[keep], idx[keep], vals[keep])

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """acts @ W_dec + b_dec (sparsify's decoder), plus x @ W_skip.T for a skip transcoder."""
        out = sparse_decode(acts, n_rows, self.W_dec) + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a skip transcoder's reconstruction needs the input it encoded (x)")
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def decoder_directions(self) -> torch.Tensor:
        return self.W_dec
