"""Run new text through the subject model and the coder: one latent's activation at every token.

The generation scorer uses it to ask whether texts an LLM wrote make the latent fire. Texts are read the
way the cache read the corpus: the start token first (never scored), then the text's own tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .coders.base import SparseCoder
    from .model import SubjectModel

MAX_PROBE_TOKENS = 256  # longer texts are cut (the cache's windows are shorter than this anyway)


@dataclass
class LatentProbe:
    model: SubjectModel
    coder: SparseCoder
    hook: str
    via_bridge: bool = False  # the forward the cache was made with (provenance "forward")

    def token_ids(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])[:MAX_PROBE_TOKENS]

    @torch.inference_mode()
    def activations(self, texts: list[str], latent: int) -> list[np.ndarray | None]:
        """Per text: the latent's activation at each of its tokens (None: the text has no tokens)."""
        ids = [self.token_ids(t) for t in texts]
        live = [i for i, x in enumerate(ids) if x]
        out: list[np.ndarray | None] = [None] * len(texts)
        if not live:
            return out
        # One forward for all texts, right-padded: in a causal model a token never sees the padding after it.
        width = max(len(ids[i]) for i in live)
        batch = torch.full((len(live), width + 1), self.model.sep_id, dtype=torch.int64)
        batch[:, 0] = self.model.start_id
        for row, i in enumerate(live):
            batch[row, 1 : len(ids[i]) + 1] = torch.tensor(ids[i])
        acts = self.model.hook_activations(batch, self.hook, via_bridge=self.via_bridge)[:, 1:]  # drop the start token
        for row, i in enumerate(live):
            n = len(ids[i])
            sparse = self.coder.encode(acts[row, :n].to(torch.float32))
            dense = np.zeros(n, np.float32)
            hit = sparse.latents == latent
            dense[sparse.rows[hit].cpu().numpy()] = sparse.values[hit].float().cpu().numpy()
            out[i] = dense
        return out
