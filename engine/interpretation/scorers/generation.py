"""Generation: the LLM writes texts that should make the latent fire, given the explanation; the subject
model and the coder then say which do. Each text is an outcome with label 1 and prediction "fired", so
recall is the fraction that fire. A text with no tokens is a counted failure, never a miss."""

from __future__ import annotations

import numpy as np

from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises, stored_answer
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.prompts import PromptTemplate

from .base import Item, ScoredRun
from .protocol import ROUGH_EXPLANATION, Needs, Scored, Scorer, llm_scored, template_tokens

MAX_TEXT_CHARS = 400


def generation_schema(n: int) -> dict:
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}
    return {
        "type": "object",
        "required": ["texts"],
        "properties": {"texts": {"type": "array", "items": text, "minItems": n, "maxItems": n}},
    }


def generation_request(
    template: PromptTemplate, explanation: str, n: int, *, seed: int, json_output: bool, temperature: float = 0.0
) -> LLMRequest:
    messages = template.render(explanation=explanation, n=str(n))
    return LLMRequest(
        messages,
        max_tokens=24 + 60 * n,
        temperature=temperature,
        seed=seed,
        json_schema=generation_schema(n) if json_output else None,
    )


@never_raises(lambda why: (None, why))
def parse_texts(r: LLMResponse, n: int) -> tuple[list[str] | None, str | None]:
    if not r.ok:
        return None, r.error
    obj = answer_json(r.text or "")
    if obj is NOT_JSON:
        return None, "unparseable answer"
    texts = obj.get("texts") if isinstance(obj, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None, "unparseable answer"
    if not texts:
        return None, "no texts"
    return texts[:n], None  # fewer than n is fine: each text is scored on its own


def generation_run(
    texts: list[str] | None, error: str | None, n: int, activations: list[np.ndarray | None]
) -> ScoredRun:
    """`activations`: the probe's per-token activations of each text (None: it tokenised to nothing)."""
    run = ScoredRun([], [])
    if texts is None:
        run.errors[error or "no texts"] += n
        run.outcomes = [ExampleOutcome(1, 0, failed=True) for _ in range(n)]
        run.items = [Item(-1, "", 1, 0) for _ in range(n)]
        return run
    if len(texts) < n:
        run.errors[f"wrote {len(texts)} of {n} texts"] += n - len(texts)
    for text, acts in zip(texts, activations):
        run.items.append(Item(-1, text, 1, 0))
        if acts is None:
            run.errors["a generated text tokenises to nothing"] += 1
            run.outcomes.append(ExampleOutcome(1, 0, failed=True))
        else:
            peak = float(acts.max(initial=0.0))
            run.outcomes.append(ExampleOutcome(1, 0, int(peak > 0), peak))
    for _ in range(n - len(texts)):  # texts asked for but not written: failures, counted above
        run.items.append(Item(-1, "", 1, 0))
        run.outcomes.append(ExampleOutcome(1, 0, failed=True))
    return run


class Generation(Scorer):
    name = "generation"
    stream = 5
    needs = Needs(subject_model=True)
    primary_metric = "recall"  # the fraction of written texts that fire the latent
    outcome = "text"
    evidence = "texts"

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> int:
        return latent  # nothing but the explanation, and which latent the texts should fire

    async def run(self, ctx, explanation: str, latent: int) -> Scored:
        n, llm = ctx.cfg.score.generation_texts, ctx.cfg.llm
        req = generation_request(
            ctx.prompts.get(self.name),
            explanation,
            n,
            seed=llm.seed,
            json_output=ctx.json_output,
            temperature=llm.temperature,
        )
        (r,) = await ctx.complete([req])
        texts, error = parse_texts(r, n)
        acts = await ctx.off_loop(ctx.probe.activations, texts, latent) if texts else []
        run = generation_run(texts, error, n, acts)
        run.accounting.add(r)
        run.details = {
            "texts": [
                {"text": stored_answer(t), "max_act": None if a is None else float(a.max(initial=0.0))}
                for t, a in zip(texts or [], acts)
            ]
        }
        return llm_scored(ctx, self.name, run, generation_texts=n)

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return 1

    def rough_tokens(self, cfg, prompts) -> tuple[int, int]:
        n = cfg.score.generation_texts
        return template_tokens(prompts, self.name, explanation=ROUGH_EXPLANATION, n=""), 24 + 60 * n
