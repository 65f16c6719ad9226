"""Run new text through the subject model and the coder: a latent's activation at every token, or the coder's
whole encoding of the text (every latent at once, and the latents that fire most on it).

The generation scorer uses `activations` to ask whether texts an LLM wrote make a latent fire; `autointerp probe`
and the TUI's probe tab use `encode_text`. Texts are read the way the cache read the corpus: the start token first
(never scored), then the text's own tokens, so a window of the corpus fed as its token ids gets the activations
the cache stored for it.
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
class TextActivations:
    """One text's encoding: its token ids and every nonzero (token, latent, value) the coder gave, never a dense
    [tokens x latents] matrix (a coder may have a million latents)."""

    ids: list[int]
    rows: np.ndarray  # int64: the token's index in `ids`
    latents: np.ndarray  # int64
    values: np.ndarray  # float32
    truncated: bool = False  # the text had more than MAX_PROBE_TOKENS tokens; the rest was not read

    def of(self, latent: int) -> np.ndarray:
        """The latent's activation at each token (0 where it did not fire)."""
        dense = np.zeros(len(self.ids), np.float32)
        hit = self.latents == latent
        dense[self.rows[hit]] = self.values[hit]
        return dense

    def top(self, n: int) -> list[tuple[int, float, int]]:
        """(latent, its max activation over the text, the first token where it reaches it) for the `n` latents
        with the largest max, largest first (equal maxima: lower latent id first)."""
        if not len(self.values):
            return []
        order = np.lexsort((self.rows, self.latents, -self.values))  # value desc, then latent, then token
        lat = self.latents[order]
        _, first = np.unique(lat, return_index=True)  # each latent's first place in that order: its max
        best = order[np.sort(first)[:n]]
        return [(int(self.latents[i]), float(self.values[i]), int(self.rows[i])) for i in best]


@dataclass
class LatentProbe:
    model: SubjectModel
    coder: SparseCoder
    hook: str
    via_bridge: bool = False  # the forward the cache was made with (provenance "forward")

    @classmethod
    def for_cache(cls, model: SubjectModel, coder: SparseCoder, provenance) -> LatentProbe:
        """The probe that reads texts as a cache with this provenance read its corpus: its hook, its forward."""
        return cls(model, coder, provenance["hook"], via_bridge=provenance.get("forward") == "bridge")

    def token_ids(self, text: str) -> list[int]:
        return list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])[:MAX_PROBE_TOKENS]

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token id decoded alone, as the store's vocabulary spells it (annotate.vocab_text)."""
        return list(self.model.tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False))

    def _hook_rows(self, ids: list[list[int]]) -> list[torch.Tensor | None]:
        """Per token list: the hook's activations at each of its tokens [n, width] in float32 (None: no tokens)."""
        live = [i for i, x in enumerate(ids) if x]
        out: list[torch.Tensor | None] = [None] * len(ids)
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
            out[i] = acts[row, : len(ids[i])].to(torch.float32)
        return out

    @torch.inference_mode()
    def activations(self, texts: list[str], latent: int) -> list[np.ndarray | None]:
        """Per text: the latent's activation at each of its tokens (None: the text has no tokens)."""
        ids = [self.token_ids(t) for t in texts]
        return [None if x is None else self._encode(ids[i], x).of(latent) for i, x in enumerate(self._hook_rows(ids))]

    @torch.inference_mode()
    def encode_ids(self, ids: list[int], truncated: bool = False) -> TextActivations:
        """Every latent's activations at each of these tokens (read after the start token, as the cache reads)."""
        ids = [int(i) for i in ids][:MAX_PROBE_TOKENS]
        (x,) = self._hook_rows([ids])
        if x is None:
            empty = np.zeros(0, np.int64)
            return TextActivations(ids, empty, empty, np.zeros(0, np.float32), truncated)
        return self._encode(ids, x, truncated)

    def encode_text(self, text: str) -> TextActivations:
        ids = list(self.model.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self.encode_ids(ids, truncated=len(ids) > MAX_PROBE_TOKENS)

    def _encode(self, ids: list[int], x: torch.Tensor, truncated: bool = False) -> TextActivations:
        sparse = self.coder.encode(x)
        return TextActivations(
            ids,
            sparse.rows.cpu().numpy().astype(np.int64),
            sparse.latents.cpu().numpy().astype(np.int64),
            sparse.values.float().cpu().numpy(),
            truncated,
        )
