"""What an explainer is: one object (explainers/'s EXPLAINERS maps each name to one) that the explain
stage, the config check and the dry run all read.

Per latent the stage calls `prepare` (on the store's worker thread: the excerpts it shows, and whatever else it
needs, through an `ExplainerContext`), sends the request it made, and reads the answer with `parse`. The flags say
what it needs besides the explainer excerpts; `prepare` asks the context for exactly that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from autointerp.engine.interpretation.examples import (
    Example,
    activation_list,
    marked_positions,
    numbered,
    plain,
    with_marks,
)
from autointerp.engine.interpretation.llm import LLMRequest

from .answers import EXPLANATION_SCHEMA, parse_explanation

if TYPE_CHECKING:
    from autointerp.engine.config import Config
    from autointerp.engine.interpretation.prompts import PromptLibrary
    from autointerp.store.results import SampleSet


class ExplainerContext(Protocol):
    """What an explainer may use of the stage (engine/interpretation/scorer_context.py gives one)."""

    @property
    def cfg(self) -> Config: ...
    @property
    def prompts(self) -> PromptLibrary: ...
    @property
    def json_output(self) -> bool: ...  # ask for JSON answers (a schema), or free text

    def role_examples(self, sample_set: SampleSet, role: str) -> list[Example]: ...

    def max_activation(self, latent: int) -> float:
        """The latent's largest activation over the cache."""

    def promoted_tokens(self, latent: int) -> list[str]:
        """The tokens the latent's decoder direction promotes most (the logit lens)."""

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list:
        """Clean and steered continuations of the role's prompts at each KL target (scorers/intervention.py)."""


@dataclass
class ExplainPrompt:
    """One latent's explain call, as its explainer prepared it."""

    request: LLMRequest | None  # None: nothing to ask, a counted failure (`failed` says why)
    n_examples: int  # what it showed
    extras: dict  # stored beside the explanation (the promoted tokens, the steering shown)
    examples: list[Example] | None = None  # the excerpts shown (best-of-N picks among candidates on them)
    failed: str | None = None


@dataclass(frozen=True)
class Explainer:
    """One way of asking for an explanation: a prompt file in prompts/, the answer's schema, and what it shows
    besides the marked explainer excerpts. The plain ones differ only in these fields; a new way of showing a
    latent is a subclass that overrides `prepare` (explainers/steered.py)."""

    name: str
    template: str  # its prompt file
    schema: dict = field(default_factory=lambda: EXPLANATION_SCHEMA)
    token_budget: float = 1.0  # times explain.max_tokens
    shows_activations: bool = False  # each excerpt's activation values (0-10 of the latent's largest)
    needs_logit_lens: bool = False  # the tokens the latent's decoder direction promotes
    needs_negatives: bool = False  # explainer-side non-activating excerpts (contrastive)
    needs_steering: bool = False  # output side: steered continuations instead of activating excerpts

    @property
    def shows_excerpts(self) -> bool:
        """Whether it shows activating excerpts (best-of-N scores its candidates on them)."""
        return not self.needs_steering

    @property
    def calls_exact(self) -> bool:
        """The dry run's call count is exact (steering: a KL target out of reach asks nothing)."""
        return not self.needs_steering

    def draws_negatives(self, cfg: Config) -> bool:
        """Whether the sample sets hold explainer-side non-activating excerpts: its own, or best-of-N's (candidates
        are scored on the explainer's side, apart from the held-out excerpts)."""
        return self.needs_negatives or cfg.explain.candidates > 1

    def max_tokens(self, cfg: Config) -> int:
        return int(cfg.explain.max_tokens * self.token_budget)

    def shown_tokens(self, cfg: Config) -> int:
        """Rough prompt tokens of what it shows besides its prompt file (the dry run, before any row measured)."""
        return cfg.sample.n_explain * (cfg.cache.window_len + 2)

    def prepare(self, ctx: ExplainerContext, latent: int, sample_set: SampleSet) -> ExplainPrompt:
        """The latent's request, from its sample set's explainer excerpts and what the flags ask for."""
        cfg = ctx.cfg
        examples = ctx.role_examples(sample_set, "explain")
        negatives = ctx.role_examples(sample_set, "explain_non") if self.needs_negatives else None
        promoted = ctx.promoted_tokens(latent) if self.needs_logit_lens else None
        request = self.request(
            ctx.prompts,
            examples,
            threshold=cfg.explain.threshold,
            scale=ctx.max_activation(latent),
            max_tokens=cfg.explain.max_tokens,
            seed=cfg.llm.seed,
            json_output=ctx.json_output,
            temperature=cfg.llm.temperature,
            promoted=promoted,
            negatives=negatives,
        )
        return ExplainPrompt(request, len(examples), {"promoted": promoted} if promoted else {}, examples)

    def request(
        self,
        prompts: PromptLibrary,
        examples: list[Example],
        *,
        threshold: float,
        scale: float,
        max_tokens: int,
        seed: int,
        json_output: bool,
        temperature: float = 0.0,
        promoted: list[str] | None = None,
        negatives: list[Example] | None = None,
    ) -> LLMRequest:
        """`scale` is the latent's largest activation (activation values are shown as 0-10 of it)."""
        blocks = []
        for i, ex in enumerate(examples, 1):
            mask = marked_positions(ex, threshold)
            block = f"Excerpt {i}: {with_marks(ex, mask)}"
            if self.shows_activations:
                block += f"\nActivations: {activation_list(ex, mask, scale)}"
            blocks.append(block)
        values = {"examples": "\n".join(blocks)}
        if self.needs_logit_lens:
            values["promoted"] = ", ".join(json.dumps(t) for t in (promoted or []))
        if self.needs_negatives:
            values["negatives"] = numbered([plain(ex) for ex in negatives or []], start=len(examples) + 1)
        return LLMRequest(
            prompts.get(self.template).render(**values),
            max_tokens=int(max_tokens * self.token_budget),
            temperature=temperature,
            seed=seed,
            json_schema=self.schema if json_output else None,
        )

    def parse(self, text: str | None) -> tuple[str | None, str | None]:
        """The answer -> (explanation, None) or (None, why it could not be used). Never raises."""
        return parse_explanation(text)

    def prompt_sha(self, prompts: PromptLibrary) -> str:
        return prompts.get(self.template).sha

    def demonstrated(self, prompts: PromptLibrary) -> set[str]:
        """The explanations its prompt's few-shot demonstrations give, lower-cased: small models often repeat one
        word for word, which explains nothing."""
        answers = (self.parse(a)[0] for a in prompts.get(self.template).demonstrations())
        return {a.lower() for a in answers if a}
