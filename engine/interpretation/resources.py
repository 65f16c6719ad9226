"""What the explain and score stages load on first use, each at most once: the tokenizer's text, the subject model
and its coder (probe, steering, logit lens), a base language model (surprisal), a sentence embedder, the example
sampler and the prompt files; and the excerpts read from the store through them. Nothing is loaded that no
configured explainer or scorer asks for."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from autointerp.store.queries import ActivatingWindows

from .errors import InterpretError
from .examples import Example, TokenText, plain
from .prompts import PromptLibrary
from .sampling import ExampleSampler, NegativeSources
from .scorers import intervention

if TYPE_CHECKING:
    from autointerp.engine.activations.lens import LogitLens
    from autointerp.engine.config import CacheConfig, Config
    from autointerp.store.db import ActivationStore
    from autointerp.store.queries import WindowQueries
    from autointerp.store.results import SampleSet

INTERVENTION_STREAM = 0x57EE  # the draw of a latent's intervention prompt pool


class Resources:
    """The lazily loaded parts of one stage over a store (its cache was made with `cache_cfg`)."""

    def __init__(
        self,
        cfg: Config,
        store: ActivationStore,
        cache_cfg: CacheConfig,
        queries: WindowQueries,
        *,
        explainer_negatives: bool,
    ):
        self.cfg, self.store, self.cache_cfg, self.queries = cfg, store, cache_cfg, queries
        self.prompts = PromptLibrary(cfg.prompts_dir or None)
        self.num_latents = int(store.provenance["num_latents"])
        self._explainer_negatives = explainer_negatives  # the sampler draws explainer-side negatives too
        self._subject = None

    def use_subject(self, model) -> None:
        """Use this already loaded subject model (the cache's model) instead of loading one; before any use."""
        assert "coder" not in self.__dict__, "the coder was loaded on another subject model"
        self._subject = model

    # The loaded models another stage over the same cache may reuse as they are; the sampler is not among them (it
    # holds the stage's own sampling settings and seed).
    SHAREABLE = ("token_text", "coder", "decoder", "probe", "base_lm", "embedder", "logit_lens")

    def share_loaded(self, other: Resources) -> None:
        """Take over what `other` (another stage's Resources over the same cache) has already loaded, so nothing is
        loaded twice; before any use."""
        if other._subject is not None:
            self.use_subject(other._subject)
        for name in self.SHAREABLE:
            if name in vars(other):  # a cached_property that has been read
                vars(self)[name] = vars(other)[name]

    @property
    def subject(self):
        if self._subject is None:
            from autointerp.engine.activations.model import SubjectModel

            self._subject = SubjectModel.load(self.cache_cfg.model, "cpu", "float32")
        return self._subject

    @cached_property
    def token_text(self) -> TokenText:
        from autointerp.engine.activations.model import load_tokenizer

        tok = load_tokenizer(self.cache_cfg.model)
        sep = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
        return TokenText(tok, int(self.store.provenance["bos_token_id"]), sep)

    @cached_property
    def coder(self):
        from autointerp.engine.activations.setup import load_configured_coder

        return load_configured_coder(self.cache_cfg, self.subject)

    @cached_property
    def decoder(self):
        w = self.coder.decoder_directions()
        if w is None:
            raise InterpretError(
                f"coder {self.coder.kind} has no decoder directions (logit lens / neighbours need them)"
            )
        return w

    @cached_property
    def probe(self):
        from autointerp.engine.activations.probe import LatentProbe

        return LatentProbe.for_cache(self.subject, self.coder, self.store.provenance)

    @cached_property
    def base_lm(self):
        from .surprisal import SurprisalError, load_base_lm

        try:
            return load_base_lm(self.cfg.score.surprisal_model, lambda: self.subject)
        except SurprisalError as e:
            raise InterpretError(str(e)) from None

    @cached_property
    def embedder(self):
        from .embedding import Embedder

        return Embedder(self.cfg.score.embedding_model)

    @cached_property
    def logit_lens(self) -> LogitLens:
        from autointerp.engine.activations.lens import LogitLens

        return LogitLens.of_model(self.subject, self.decoder, hook=str(self.store.provenance["hook"]))

    @cached_property
    def sampler(self) -> ExampleSampler:
        from autointerp.engine.activations.neighbours import CoactivationIndex, DecoderNeighbours

        src = self.cfg.sample.non_activating_source
        sources = NegativeSources()
        if src == "neighbours":
            sources.neighbours = DecoderNeighbours(self.decoder)
        elif src == "coactivation":
            sources.coactivating = CoactivationIndex(self.queries, self.num_latents)
        elif src == "embedding":
            sources.by_embedding = self._rank_by_embedding
        return ExampleSampler(self.queries, self.cfg.sample, sources, explainer_negatives=self._explainer_negatives)

    def _rank_by_embedding(self, pool: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Non-activating candidates ordered by similarity to the centroid of the explainer's examples."""
        cand = self.examples(-1, pool)
        ref = self.examples(-1, reference)
        c = self.embedder.encode([plain(e) for e in cand])
        r = self.embedder.encode([plain(e) for e in ref]).mean(axis=0)
        return pool[np.argsort(-(c @ r), kind="stable")]

    # ---- excerpts -----------------------------------------------------------------------------

    def examples(self, latent: int, windows, deciles=None) -> list[Example]:
        """Windows -> Examples with this latent's activations (latent -1: windows only, no activations)."""
        windows = np.asarray(windows, dtype=np.int64)
        if latent >= 0:
            aw = self.queries.activating(latent)
        else:
            empty = np.zeros(0, np.int64)
            aw = ActivatingWindows(-1, empty, np.zeros(0, np.float32), empty, np.zeros(0, np.float32))
        lws = self.queries.fetch(aw, windows)
        deciles = deciles if deciles is not None else [0] * len(lws)
        return [
            Example(
                int(w.seq * self.queries.windows_per_seq + w.start // self.queries.window_len),
                self.token_text(w.tokens),
                w.acts,
                int(d),
            )
            for w, d in zip(lws, deciles)
        ]

    def role_examples(self, s: SampleSet, role: str) -> list[Example]:
        items = s.role(role)
        return self.examples(s.latent, [w for w, _, _ in items], [d for _, d, _ in items])

    def max_activation(self, latent: int) -> float:
        return float(self.store.latent_stats(latent)["max_act"])

    def promoted_tokens(self, latent: int) -> list[str]:
        return self.logit_lens.promoted(latent)

    # ---- steering (intervention scorer and explainer) -----------------------------------------

    def intervention_prompts(self, latent: int) -> dict[str, tuple[list[int], np.ndarray]]:
        """The latent's pool of corpus prompts (seeded by (seed, latent)), split into disjoint explainer and
        scorer sets: role -> (sequence ids, [n, prompt_tokens] token ids; each starts with the start token)."""
        sc = self.cfg.score
        n_seq = self.store.n_sequences()
        rng = np.random.default_rng([self.cfg.sample.seed, latent, INTERVENTION_STREAM])
        total = min(sc.intervention_explain_prompts + sc.intervention_prompts, n_seq)
        ids = [int(x) for x in rng.choice(n_seq, size=total, replace=False)]
        length = min(sc.intervention_prompt_tokens, self.queries.seq_len)
        seqs = self.store.sequences(ids)
        tokens = np.stack([seqs[i][:length].astype(np.int64) for i in ids]) if ids else np.zeros((0, length), np.int64)
        k = min(sc.intervention_explain_prompts, total // 2)  # the scorer keeps at least half
        return {"explain": (ids[:k], tokens[:k]), "score": (ids[k:], tokens[k:])}

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list[intervention.TargetEffects]:
        """Clean and steered continuations of the role's prompts at each KL target (runs the subject model)."""
        import torch

        from autointerp.engine.activations.model import ModelError
        from autointerp.engine.activations.steering import Steerer, SteeringError, steering_site

        ids, tokens = self.intervention_prompts(latent)[role]
        try:
            steerer = Steerer(self.subject, steering_site(self.coder, self.store.provenance["hook"], latent))
        except (SteeringError, ModelError) as e:  # counted failures of this latent, not a stopped stage
            return [intervention.TargetEffects(t, None, None, 0, str(e), len(ids)) for t in targets]
        return intervention.steer_prompts(
            steerer,
            torch.from_numpy(tokens),
            ids,
            lambda x: "".join(self.token_text(x)),
            targets,
            self.cfg.score.intervention_new_tokens,
        )
