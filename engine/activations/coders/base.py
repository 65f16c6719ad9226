"""The one interface every sparse coder (SAE, transcoder, neurons) is used through."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from autointerp.store.errors import UserError


class CoderError(UserError):
    """A checkpoint that cannot be used, stated in one line."""


@dataclass
class SparseActs:
    """Nonzero activations of a batch of rows: row index, latent index, value (flat, same length)."""

    rows: torch.Tensor  # int64
    latents: torch.Tensor  # int64
    values: torch.Tensor  # float32

    def __len__(self) -> int:
        return int(self.rows.numel())


def topk_sparse(pre: torch.Tensor, k: int) -> SparseActs:
    """Keep the k largest positive entries of each row, without building a dense output."""
    vals, idx = pre.topk(min(k, pre.shape[-1]), dim=-1, sorted=False)
    rows = torch.arange(pre.shape[0], device=pre.device).unsqueeze(1).expand_as(idx)
    keep = vals > 0
    return SparseActs(rows[keep], idx[keep], vals[keep].float())


def sparse_decode(acts: SparseActs, n_rows: int, W_dec: torch.Tensor) -> torch.Tensor:
    """`acts @ W_dec` as a dense [n_rows, d_out], from the sparse activations: a sparse [rows x latents] matrix
    times the decoder (work ~ nnz x d_out, memory ~ n_rows x d_out), never a dense [rows x latents] one."""
    out_shape = (n_rows, W_dec.shape[1])
    if len(acts) == 0:
        return torch.zeros(out_shape, dtype=W_dec.dtype, device=W_dec.device)
    index = torch.stack([acts.rows.to(W_dec.device), acts.latents.to(W_dec.device)])
    values = acts.values.to(W_dec.device, W_dec.dtype)
    sparse = torch.sparse_coo_tensor(index, values, (n_rows, W_dec.shape[0]), check_invariants=False)
    return torch.sparse.mm(sparse, W_dec)


def nonzero_sparse(acts: torch.Tensor) -> SparseActs:
    rows, latents = torch.nonzero(acts > 0, as_tuple=True)
    return SparseActs(rows, latents, acts[rows, latents].float())


@dataclass
class SparseCoder:
    """A loaded coder. `encode` maps hook activations [N, d_in] to their nonzero latents.

    `hook` is the hook point the coder reads, in the form its checkpoint names it (None when the
    checkpoint does not say); `transcoder` coders read an MLP's input and predict its output.
    """

    kind: str
    num_latents: int
    d_in: int
    hook: str | None
    content_hash: str
    path: str
    transcoder: bool = False

    def encode(self, x: torch.Tensor) -> SparseActs:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction [n_rows, d_out] of `n_rows` rows from their sparse activations (as `encode` gave
        them), in the hook's own units (an input normalisation undone). `x` is the input `encode` read [n_rows,
        d_in]: needed where the output depends on it beyond the latents (a skip transcoder's `W_skip`, SAELens's
        per-row normalisations); a transcoder's output is its prediction of the MLP output, not of `x`."""
        raise NotImplementedError  # pragma: no cover - abstract

    def decoder_directions(self) -> torch.Tensor | None:
        """[num_latents, d] directions the latents write (None for neurons without weights)."""
        return None

    def to(self, device: str | torch.device) -> "SparseCoder":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


def hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def require(mapping: dict, key: str, source: str):
    if key not in mapping:
        raise CoderError(f"{source} has no '{key}'")
    return mapping[key]


def check_shape(t: torch.Tensor, shape: tuple, name: str, source: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise CoderError(f"{source}: '{name}' has shape {tuple(t.shape)}, expected {tuple(shape)}")
