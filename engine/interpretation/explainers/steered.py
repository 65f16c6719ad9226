"""The output-side explainer (`intervention`): no activating text, but what steering with the latent's decoder
direction does to the subject model's continuations, clean and steered at the median KL target. The steering is the
intervention scorer's (scorers/intervention.py), which scores the explanation on other prompts the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from autointerp.engine.interpretation.llm import LLMRequest
from autointerp.engine.interpretation.scorers.intervention import TargetEffects

from .base import Explainer, ExplainerContext, ExplainPrompt

if TYPE_CHECKING:
    from autointerp.engine.config import Config
    from autointerp.store.results import SampleSet


@dataclass(frozen=True)
class SteeredExplainer(Explainer):
    needs_steering: bool = True

    def prepare(self, ctx: ExplainerContext, latent: int, sample_set: SampleSet) -> ExplainPrompt:
        cfg = ctx.cfg
        target = explain_target(cfg.score.kl_targets)
        (effects,) = ctx.steering_effects(latent, "explain", [target])
        extras = {"steering": effects.summary()}
        if effects.strength is None:  # the target is out of reach: nothing to show
            return ExplainPrompt(None, len(effects.pairs), extras, failed=effects.error)
        request = LLMRequest(
            ctx.prompts.get(self.template).render(examples=explain_examples(effects)),
            max_tokens=self.max_tokens(cfg),
            temperature=cfg.llm.temperature,
            seed=cfg.llm.seed,
            json_schema=self.schema if ctx.json_output else None,
        )
        return ExplainPrompt(request, len(effects.pairs), extras)

    def shown_tokens(self, cfg: Config) -> int:
        sc = cfg.score
        return sc.intervention_explain_prompts * (sc.intervention_prompt_tokens + 2 * sc.intervention_new_tokens + 8)


def explain_examples(effects: TargetEffects) -> str:
    blocks = [
        f"Text {i}: {p.prompt}\nNormal: {p.clean}\nFeature on: {p.steered}" for i, p in enumerate(effects.pairs, 1)
    ]
    return "\n".join(blocks)


def explain_target(targets: list[float]) -> float:
    """The KL target the explainer sees: the median one (strong enough to show, not so strong it is noise)."""
    return sorted(targets)[len(targets) // 2]
