"""What the LLM scorers share: items to label, label prompts in chunks, answer parsing, accounting."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

from autointerp.engine.interpretation.examples import numbered
from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.prompts import PromptTemplate


@dataclass
class Item:
    """One excerpt as a scorer shows it, and the answer that would be right."""

    window: int
    text: str
    label: int  # 1: the explanation should say yes
    decile: int  # 1..n for activating windows, 0 otherwise


@dataclass
class Accounting:
    n_calls: int = 0
    n_failed_calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # -1 once any call's backend did not say
    output_tokens: int = 0
    llm_seconds: float = 0.0

    def add(self, r: LLMResponse) -> None:
        self.n_calls += 1
        self.n_failed_calls += 0 if r.ok else 1
        self.prompt_tokens += r.prompt_tokens
        self.output_tokens += r.output_tokens
        self.llm_seconds += r.latency_s
        if r.cached_tokens is None or self.cached_tokens < 0:
            self.cached_tokens = -1
        else:
            self.cached_tokens += r.cached_tokens

    def as_row(self) -> dict:
        return dict(vars(self))


@dataclass
class ScoredRun:
    """One explanation scored on one item set."""

    outcomes: list[ExampleOutcome]
    items: list[Item]  # aligned with outcomes
    accounting: Accounting = field(default_factory=Accounting)
    errors: Counter = field(default_factory=Counter)
    # Scorer-specific results beside the classification metrics (stored as JSON in scores.details); a
    # "correlation" key fills the scores.correlation column.
    details: dict = field(default_factory=dict)
    # Failed examples no rerun can change (a steering target out of reach); the others (a call error, an
    # unparseable answer) are worth another try, and a rerun scores the explanation again.
    permanent_failures: int = 0
    # Simulation: each outcome's true per-token activations, for its correlation's interval (intervals.py); not stored
    # (the cache holds them).
    truth: list | None = None


def labels_schema(n: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "labels": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}, "minItems": n, "maxItems": n}
        },
        "required": ["labels"],
    }


def label_requests(
    template: PromptTemplate,
    explanation: str,
    items: list[Item],
    per_prompt: int,
    *,
    seed: int,
    top_logprobs: int,
    json_output: bool,
    temperature: float = 0.0,
) -> list[tuple[LLMRequest, list[Item]]]:
    """Items in prompts of `per_prompt`; the explanation sits before the excerpts in every prompt."""
    out = []
    for i in range(0, len(items), per_prompt):
        chunk = items[i : i + per_prompt]
        messages = template.render(
            explanation=explanation, examples=numbered([it.text for it in chunk]), n=str(len(chunk))
        )
        req = LLMRequest(
            messages,
            max_tokens=8 + 4 * len(chunk),
            temperature=temperature,
            seed=seed,
            top_logprobs=top_logprobs,
            json_schema=labels_schema(len(chunk)) if json_output else None,
        )
        out.append((req, chunk))
    return out


_LIST = re.compile(r"\[\s*([01](?:\s*,\s*[01])*)\s*\]")


@never_raises(lambda why: (None, None, why))
def parse_labels(r: LLMResponse, n: int) -> tuple[list[int] | None, list[float | None] | None, str | None]:
    """An answer -> (labels, P(1) per label or None, None) or (None, None, why not)."""
    if not r.ok:
        return None, None, r.error
    text = r.text or ""
    labels = None
    obj = answer_json(text)
    if obj is not NOT_JSON:
        if isinstance(obj, dict) and isinstance(obj.get("labels"), list):
            labels = obj["labels"]
    else:
        m = _LIST.search(text)  # a list of 0/1 inside a chatty answer
        labels = [int(x) for x in re.findall(r"[01]", m.group(1))] if m else None
    if labels is None:
        return None, None, "unparseable answer"
    if not all(isinstance(x, int) and not isinstance(x, bool) and x in (0, 1) for x in labels):
        return None, None, "labels other than 0 and 1"
    if len(labels) != n:
        return None, None, f"wrong number of labels ({len(labels)} for {n} excerpts)"
    return labels, _label_probabilities(r, n), None


def _label_probabilities(r: LLMResponse, n: int) -> list[float | None] | None:
    """P("1") / (P("0") + P("1")) at each generated label token, from the backend's logprobs."""
    if not r.logprobs:
        return None
    slots = [t for t in r.logprobs if t.token.strip() in ("0", "1")]
    if len(slots) != n:
        return None  # the label tokens cannot be told apart from other digits: no probabilities
    probs = []
    for t in slots:
        p = {"0": 0.0, "1": 0.0}
        for text, lp in t.top.items():
            if text.strip() in p and math.isfinite(lp):
                p[text.strip()] += math.exp(lp)
        total = p["0"] + p["1"]
        probs.append(p["1"] / total if total > 0 else None)
    return probs


def outcomes_from(batches: list[tuple[LLMRequest, list[Item]]], responses: list[LLMResponse]) -> ScoredRun:
    run = ScoredRun([], [])
    for (_, chunk), r in zip(batches, responses):
        run.accounting.add(r)
        run.items.extend(chunk)
        labels, probs, error = parse_labels(r, len(chunk))
        if error is not None:
            run.errors[error] += len(chunk)
        for j, it in enumerate(chunk):
            if labels is None:
                run.outcomes.append(ExampleOutcome(it.label, it.decile, failed=True))
            else:
                run.outcomes.append(ExampleOutcome(it.label, it.decile, labels[j], probs[j] if probs else None))
    return run
