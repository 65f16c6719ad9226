"""Intruder: groups of excerpts where all but one activate the latent; given the explanation, the scorer
names the one that does not. Each group is one prompt and one outcome (right or wrong); chance is
1 / (group size + 1)."""

from __future__ import annotations

import re

import numpy as np

from autointerp.engine.interpretation.examples import Example, numbered, plain
from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.prompts import PromptTemplate

from .base import Item, ScoredRun
from .protocol import ROUGH_EXPLANATION, Scored, Scorer, llm_scored, template_tokens


def intruder_groups(
    activating: list[Example], non_activating: list[Example], group: int, rng: np.random.Generator
) -> list[tuple[list[Item], int]]:
    """(the group's items in shown order, index of the intruder). Activating excerpts are grouped by
    strength (neighbouring deciles together), so an intruder cannot be spotted by a weak example alone."""
    act = sorted(activating, key=lambda ex: (ex.decile, ex.window))
    non = [non_activating[i] for i in rng.permutation(len(non_activating))]
    out = []
    for g in range(min(len(act) // group, len(non))):
        members = [Item(ex.window, plain(ex), 1, ex.decile) for ex in act[g * group : (g + 1) * group]]
        members.append(Item(non[g].window, plain(non[g]), 0, 0))
        order = rng.permutation(len(members))
        shown = [members[i] for i in order]
        out.append((shown, int(np.flatnonzero(order == len(members) - 1)[0])))
    return [out[i] for i in rng.permutation(len(out))]


def intruder_schema(n: int) -> dict:
    return {
        "type": "object",
        "properties": {"intruder": {"type": "integer", "enum": list(range(1, n + 1))}},
        "required": ["intruder"],
    }


def intruder_request(
    template: PromptTemplate,
    explanation: str,
    items: list[Item],
    *,
    seed: int,
    top_logprobs: int,
    json_output: bool,
    temperature: float = 0.0,
) -> LLMRequest:
    messages = template.render(explanation=explanation, examples=numbered([it.text for it in items]), n=str(len(items)))
    return LLMRequest(
        messages,
        max_tokens=16,
        temperature=temperature,
        seed=seed,
        top_logprobs=top_logprobs,
        json_schema=intruder_schema(len(items)) if json_output else None,
    )


_NUMBER = re.compile(r"\b(\d+)\b")


@never_raises(lambda why: (None, None, why))
def parse_intruder(r: LLMResponse, n: int) -> tuple[int | None, list[float] | None, str | None]:
    """-> (0-based index named, P(each excerpt is named) from logprobs or None, None) or (None, None, why not)."""
    if not r.ok:
        return None, None, r.error
    text = r.text or ""
    obj = answer_json(text)
    if obj is not NOT_JSON:
        value = obj.get("intruder") if isinstance(obj, dict) else None
    else:
        m = _NUMBER.search(text)
        value = int(m.group(1)) if m else None
    if not isinstance(value, int) or isinstance(value, bool):
        return None, None, "unparseable answer"
    if not 1 <= value <= n:
        return None, None, f"intruder {value} is not an excerpt number (1-{n})"
    return value - 1, _choice_probabilities(r, value, n), None


def _choice_probabilities(r: LLMResponse, value: int, n: int) -> list[float] | None:
    """At the token that spelled the answer: the alternatives' probabilities, renormalised over 1..n."""
    for t in r.logprobs or []:
        if t.token.strip() == str(value):
            probs = [0.0] * n
            for text, lp in t.top.items():
                k = text.strip()
                if k.isdigit() and 1 <= int(k) <= n and np.isfinite(lp):
                    probs[int(k) - 1] += float(np.exp(lp))
            total = sum(probs)
            return [p / total for p in probs] if total > 0 else None
    return None


class Intruder(Scorer):
    name = "intruder"
    evidence = "groups"
    stream = 4
    primary_metric = "accuracy"  # the share of groups whose intruder was named

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> list[tuple[list[Item], int]]:
        return intruder_groups(act, non, ctx.cfg.score.intruder_group, rng)

    async def run(self, ctx, explanation: str, groups: list[tuple[list[Item], int]]) -> Scored:
        template, llm, group = ctx.prompts.get(self.name), ctx.cfg.llm, ctx.cfg.score.intruder_group
        reqs = [
            intruder_request(
                template,
                explanation,
                items,
                seed=llm.seed,
                top_logprobs=llm.top_logprobs,
                json_output=ctx.json_output,
                temperature=llm.temperature,
            )
            for items, _ in groups
        ]
        run = ScoredRun([], [])
        shown = []  # per group, in outcome order: its windows as shown, the intruder's place, the one named
        for (items, answer), r in zip(groups, await ctx.complete(reqs)):
            run.accounting.add(r)
            run.items.append(items[answer])
            chosen, probs, error = parse_intruder(r, len(items))
            shown.append({"windows": [it.window for it in items], "intruder": answer, "named": chosen})
            if error is not None:
                run.errors[error] += 1
                run.outcomes.append(ExampleOutcome(1, 0, failed=True))
            else:
                run.outcomes.append(ExampleOutcome(1, 0, int(chosen == answer), probs[answer] if probs else None))
        run.details = {"group": group + 1, "chance": 1 / (group + 1), "groups": shown}
        return llm_scored(ctx, self.name, run, intruder_group=group)

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return min(n_act // cfg.score.intruder_group, n_non)

    def rough_tokens(self, cfg, prompts) -> tuple[int, int]:
        base = template_tokens(prompts, self.name, explanation=ROUGH_EXPLANATION, examples="", n="")
        return base + (cfg.score.intruder_group + 1) * (cfg.cache.window_len + 4), 16
