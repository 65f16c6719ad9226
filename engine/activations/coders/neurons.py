"""MLP neurons as latents (the paper's baseline), optionally sparsified to the top k per token."""

from __future__ import annotations

import torch

from .base import SparseActs, SparseCoder, nonzero_sparse, topk_sparse


class NeuronCoder(SparseCoder):
    """Identity coder over MLP hidden activations; only positive activations count as firing."""

    def __init__(self, d_mlp: int, hook: str, k: int | None):
        self.k = k
        super().__init__(
            kind="neurons",
            num_latents=d_mlp,
            d_in=d_mlp,
            hook=hook,
            content_hash=f"neurons-d{d_mlp}-k{k}",
            path="",
        )

    def encode(self, x: torch.Tensor) -> SparseActs:
        return topk_sparse(x, self.k) if self.k else nonzero_sparse(x)

    def decode(self, acts: SparseActs, n_rows: int, x: torch.Tensor | None = None) -> torch.Tensor:
        """The identity: the kept (positive, top-k) neuron activations in place, zeros elsewhere. Dense, as the
        hook is: [n_rows, d_mlp]."""
        out = torch.zeros(n_rows, self.d_in, dtype=torch.float32, device=acts.values.device)
        out[acts.rows, acts.latents] = acts.values.float()
        return out
