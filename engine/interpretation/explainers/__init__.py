"""Explainers: turn a latent's explainer examples into a prompt, and the answer into an explanation.

Each explainer is a prompt file in prompts/ plus what it shows besides the excerpts: activation values, chain of
thought, the logit-lens tokens, hard negatives (contrastive), or steered continuations instead (the output side).
base.py says what an explainer is, answers.py how its answer is read, steered.py the output-side one.
`EXPLAINERS` is the one registry, name -> Explainer: the explain stage, the config's check of explainer names and the
dry run read it. A new explainer is an `Explainer` (its fields, or a subclass for a new way of showing a latent) and
one line here.
"""

from __future__ import annotations

from .answers import COT_SCHEMA, EXPLANATION_SCHEMA, MAX_EXPLANATION_CHARS, parse_explanation
from .base import Explainer, ExplainerContext, ExplainPrompt
from .steered import SteeredExplainer

EXPLAINERS: dict[str, Explainer] = {
    e.name: e
    for e in (
        Explainer("default", "explain_default"),
        Explainer("activations", "explain_activations", shows_activations=True),
        Explainer("cot", "explain_cot", COT_SCHEMA, token_budget=4.0),
        Explainer("logit_lens", "explain_logit_lens", needs_logit_lens=True),
        Explainer("contrastive", "explain_contrastive", needs_negatives=True),
        SteeredExplainer("intervention", "explain_intervention"),
    )
}

__all__ = [
    "COT_SCHEMA",
    "EXPLAINERS",
    "EXPLANATION_SCHEMA",
    "MAX_EXPLANATION_CHARS",
    "Explainer",
    "ExplainerContext",
    "ExplainPrompt",
    "SteeredExplainer",
    "parse_explanation",
]
