"""Explainers: turn a latent's explainer examples into a prompt, and the answer into an explanation.

Each explainer is a prompt file in prompts/ plus what it shows besides the excerpts: activation values,
chain of thought, the logit-lens tokens, or hard negatives (contrastive).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises

from .examples import Example, activation_list, marked_positions, plain, with_marks
from .llm import LLMRequest
from .prompts import PromptLibrary

MAX_EXPLANATION_CHARS = 200
# maxLength makes a grammar-constrained answer close its string instead of running into the token
# budget (a small model rambles; a truncated answer would be a failure).
_EXPLANATION = {"type": "string", "minLength": 1, "maxLength": MAX_EXPLANATION_CHARS}
EXPLANATION_SCHEMA = {"type": "object", "properties": {"explanation": _EXPLANATION}, "required": ["explanation"]}
COT_SCHEMA = {
    "type": "object",
    "properties": {"reasoning": {"type": "string", "maxLength": 600}, "explanation": _EXPLANATION},
    "required": ["reasoning", "explanation"],
}


@dataclass(frozen=True)
class ExplainerSpec:
    name: str
    template: str
    schema: dict
    token_budget: float = 1.0  # times ExplainConfig.max_tokens
    shows_activations: bool = False
    needs_logit_lens: bool = False
    needs_negatives: bool = False
    needs_steering: bool = False  # output side: shows steered continuations instead of activating excerpts


EXPLAINERS = {
    s.name: s
    for s in (
        ExplainerSpec("default", "explain_default", EXPLANATION_SCHEMA),
        ExplainerSpec("activations", "explain_activations", EXPLANATION_SCHEMA, shows_activations=True),
        ExplainerSpec("cot", "explain_cot", COT_SCHEMA, token_budget=4.0),
        ExplainerSpec("logit_lens", "explain_logit_lens", EXPLANATION_SCHEMA, needs_logit_lens=True),
        ExplainerSpec("contrastive", "explain_contrastive", EXPLANATION_SCHEMA, needs_negatives=True),
        ExplainerSpec("intervention", "explain_intervention", EXPLANATION_SCHEMA, needs_steering=True),
    )
}


def numbered(lines: list[str], start: int = 1) -> str:
    return "\n".join(f"Excerpt {i}: {line}" for i, line in enumerate(lines, start))


def build_request(
    spec: ExplainerSpec,
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
        if spec.shows_activations:
            block += f"\nActivations: {activation_list(ex, mask, scale)}"
        blocks.append(block)
    text = "\n".join(blocks)
    values = {"examples": text}
    if spec.needs_logit_lens:
        values["promoted"] = ", ".join(json.dumps(t) for t in (promoted or []))
    if spec.needs_negatives:
        values["negatives"] = numbered([plain(ex) for ex in negatives or []], start=len(examples) + 1)
    messages = prompts.get(spec.template).render(**values)
    return LLMRequest(
        messages,
        max_tokens=int(max_tokens * spec.token_budget),
        temperature=temperature,
        seed=seed,
        json_schema=spec.schema if json_output else None,
    )


_FIELD = re.compile(r'"explanation"\s*:\s*"((?:[^"\\]|\\.)*)"', re.S)


@never_raises(lambda why: (None, why))
def parse_explanation(text: str | None) -> tuple[str | None, str | None]:
    """The answer -> (explanation, None) or (None, why it could not be used). Never raises."""
    if not text or not text.strip():
        return None, "empty answer"
    # strict JSON is not asked for: a raw line break inside the string (small models write them) is JSON enough
    obj = answer_json(text)
    if obj is not NOT_JSON:
        value = obj.get("explanation") if isinstance(obj, dict) else None
    else:
        # A chatty answer around the JSON: take a complete explanation field, else the text after an
        # "Explanation:" label (free-text backends); a truncated field is a failure, never guessed.
        m = _FIELD.search(text)
        if m:
            value = answer_json(f'"{m.group(1)}"')
            if value is NOT_JSON:
                return None, "unparseable answer"
        elif '"explanation"' in text:
            return None, "truncated answer"
        else:
            m = re.search(r"explanation\s*:\s*(.+)", text, re.I)
            value = m.group(1).strip().strip('"') if m else None
    if not isinstance(value, str) or not value.strip():
        return None, "no explanation in the answer"
    return " ".join(value.split())[:MAX_EXPLANATION_CHARS], None
