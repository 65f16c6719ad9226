"""The logit lens of a latent: which output tokens its decoder direction promotes and suppresses."""

from typing import Any

import torch


class LogitLens:
    """Tokens a latent promotes: the unembedding times its decoder direction (through the final norm's
    gain where the model has one), the path expansion W_U W_dec[f]."""

    def __init__(
        self,
        unembed: torch.Tensor,
        decoder: torch.Tensor,
        norm_gain: torch.Tensor | None,
        tokenizer,
        device: str | torch.device = "cpu",
    ):
        self.w_u = unembed.detach().float().to(device)  # [d, vocab]
        self.w_dec = decoder.detach().float().to(device)  # [latents, d]
        self.gain = norm_gain.detach().float().to(device) if norm_gain is not None else None
        self.tokenizer = tokenizer

    @classmethod
    def of_model(
        cls, subject, decoder: torch.Tensor, device: str | torch.device = "cpu", hook: str = ""
    ) -> "LogitLens":
        """The lens of a loaded SubjectModel: its W_U and, where it has one, its final norm's gain. `hook`: where the
        decoder writes; an attention SAE's directions (attn.hook_z) reach the residual stream through W_O first."""
        bridge = subject.bridge
        decoder = subject.residual_directions(hook, decoder)
        return cls(bridge.W_U, decoder, final_norm_gain(bridge), subject.tokenizer, device)

    def _scaled(self, latents) -> torch.Tensor:
        """Decoder direction(s) of `latents` (an int or an index tensor) through the norm's gain."""
        d = self.w_dec[latents]
        if self.gain is not None:
            d = d * self.gain
        return d

    def promoted(self, latent: int, k: int = 10) -> list[str]:
        top = (self._scaled(latent) @ self.w_u).topk(k).indices.tolist()
        return self.tokenizer.batch_decode([[t] for t in top])

    def extremes(self, latents: torch.Tensor, k: int = 10):
        """For a batch of latents: (top k, bottom k) of their logit-lens scores, each a torch.topk result
        (values, indices) of shape [len(latents), k]; the top descending, the bottom most negative first.
        Only [len(latents), vocab] is ever built, so callers bound memory by the batch size."""
        logits = self._scaled(latents) @ self.w_u
        k = min(k, logits.shape[1])
        return logits.topk(k, dim=1), logits.topk(k, dim=1, largest=False)


def final_norm_gain(bridge) -> torch.Tensor | None:
    """The per-dimension scale the final norm applies to a unit-RMS direction; None where there is no final norm.

    An RMS norm's gain is read by running it on a vector of ones (RMS 1): Gemma's norms scale by (1 + weight), not
    by their stored weight, and reading `weight` gave Gemma-2/3's lens all-zero logits. A LayerNorm (it has a bias)
    centres ones to zero, so its weight is taken as the gain, as before."""
    norm: Any = getattr(bridge, "ln_final", None)
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    if getattr(norm, "bias", None) is not None:
        return weight
    with torch.no_grad():
        ones = torch.ones(1, 1, weight.shape[-1], dtype=weight.dtype, device=weight.device)
        return norm(ones).flatten().detach()
