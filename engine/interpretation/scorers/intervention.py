"""Intervention: explain and score what a latent *does*. The subject model continues corpus prompts twice,
clean and with the latent's decoder direction added at its hook, at strengths tuned to target KL
divergences; the scorer reads the explanation and says which continuation of each pair was steered.

Output latents (ones that promote tokens rather than respond to them) fail the input-side scorers but pass
this one. The same steered continuations feed the output-side explainer (`explain.explainer =
"intervention"`), so a latent can be explained and scored without any activating text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises
from autointerp.engine.interpretation.metrics import ExampleOutcome, classification_metrics
from autointerp.engine.interpretation.prompts import PromptTemplate

from .base import Item, ScoredRun
from .protocol import ROUGH_EXPLANATION, Needs, Scored, Scorer, llm_scored, template_tokens


def _clean(text: str) -> str:
    return text.replace("\r", "").replace("\n", "\\n")


@dataclass
class SteeredPair:
    prompt_id: int  # the cached sequence the prompt was cut from
    prompt: str
    clean: str
    steered: str


@dataclass
class TargetEffects:
    target: float  # KL target (nats)
    strength: float | None  # None: the target could not be reached
    kl: float | None
    steps: int
    error: str | None
    n_prompts: int
    pairs: list[SteeredPair] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "target": self.target,
            "strength": self.strength,
            "kl": self.kl,
            "search_steps": self.steps,
            "error": self.error,
        }


def steer_prompts(
    steerer, prompts, prompt_ids: list[int], decode, targets: list[float], n_new: int
) -> list[TargetEffects]:
    """For each KL target: tune the strength on these prompts, then continue each clean and steered (greedy).

    `prompts`: [B, T] token ids; `decode`: ids -> text."""
    clean = steerer.generate(prompts, 0.0, n_new)
    texts = [_clean(decode(p)) for p in prompts.tolist()]
    clean_texts = [_clean(decode(c)) for c in clean.tolist()]
    out = []
    for target in targets:
        found = steerer.find_strength(prompts, target)
        effects = TargetEffects(target, found.strength, found.kl, found.steps, found.error, len(prompt_ids))
        if found.strength is not None:
            steered = steerer.generate(prompts, found.strength, n_new)
            effects.pairs = [
                SteeredPair(pid, t, c, _clean(decode(s)))
                for pid, t, c, s in zip(prompt_ids, texts, clean_texts, steered.tolist())
            ]
        out.append(effects)
    return out


# ---- scoring ----------------------------------------------------------------------------------


@dataclass
class PairItem:
    target_index: int
    pair: SteeredPair
    steered_is_b: bool


def pair_items(effects: list[TargetEffects], rng: np.random.Generator) -> tuple[list[PairItem], dict]:
    """Pairs to show, in a seeded A/B order; pairs whose continuations are identical carry no signal and are
    not shown (their count is reported per target)."""
    items, identical = [], {}
    for i, eff in enumerate(effects):
        identical[i] = 0
        for pair in eff.pairs:
            if pair.clean == pair.steered:
                identical[i] += 1
            else:
                items.append(PairItem(i, pair, bool(rng.integers(2))))
    return items, identical


def intervention_schema() -> dict:
    return {
        "type": "object",
        "properties": {"intervened": {"type": "string", "enum": ["A", "B"]}},
        "required": ["intervened"],
    }


def intervention_request(
    template: PromptTemplate,
    explanation: str,
    item: PairItem,
    *,
    seed: int,
    top_logprobs: int,
    json_output: bool,
    temperature: float = 0.0,
) -> LLMRequest:
    p = item.pair
    a, b = (p.clean, p.steered) if item.steered_is_b else (p.steered, p.clean)
    messages = template.render(explanation=explanation, prompt=p.prompt, a=a, b=b)
    return LLMRequest(
        messages,
        max_tokens=16,
        temperature=temperature,
        seed=seed,
        top_logprobs=top_logprobs,
        json_schema=intervention_schema() if json_output else None,
    )


_LETTER = re.compile(r"\b([AB])\b")


@never_raises(lambda why: (None, None, why))
def parse_choice(r: LLMResponse) -> tuple[int | None, float | None, str | None]:
    """-> (1 if the answer is B else 0, P("B") over A/B from logprobs or None, None) or (None, None, why)."""
    if not r.ok:
        return None, None, r.error
    text = r.text or ""
    obj = answer_json(text)
    if obj is not NOT_JSON:
        value = obj.get("intervened") if isinstance(obj, dict) else None
    else:
        m = _LETTER.search(text)
        value = m.group(1) if m else None
    if value not in ("A", "B"):
        return None, None, "unparseable answer"
    prob = None
    for t in r.logprobs or []:
        if t.token.strip() == value:
            p = {"A": 0.0, "B": 0.0}
            for alt, lp in t.top.items():
                if alt.strip() in p and math.isfinite(lp):
                    p[alt.strip()] += math.exp(lp)
            prob = p["B"] / (p["A"] + p["B"]) if p["A"] + p["B"] > 0 else None
            break
    return int(value == "B"), prob, None


def intervention_run(
    effects: list[TargetEffects], items: list[PairItem], identical: dict, responses: list[LLMResponse], n_deciles: int
) -> ScoredRun:
    """Outcome per pair: label 1 when the steered continuation is B, prediction 1 when the answer is B, so
    accuracy is the share named correctly and balanced accuracy removes a bias toward either letter.
    A target that could not be reached makes each of its prompts a counted failure."""
    run = ScoredRun([], [])
    by_target: dict[int, list[ExampleOutcome]] = {i: [] for i in range(len(effects))}
    for item, r in zip(items, responses):
        run.accounting.add(r)
        choice, prob, error = parse_choice(r)
        label = int(item.steered_is_b)
        if error is not None:
            run.errors[error] += 1
            o = ExampleOutcome(label, 0, failed=True)
        else:
            o = ExampleOutcome(label, 0, choice, prob)
        run.outcomes.append(o)
        run.items.append(Item(item.pair.prompt_id, item.pair.prompt, label, 0))
        by_target[item.target_index].append(o)
    per_target = []
    for i, eff in enumerate(effects):
        if eff.strength is None:
            n = eff.n_prompts
            run.errors[eff.error or f"KL target {eff.target} not reached"] += n
            run.permanent_failures += n
            failed = [ExampleOutcome(1, 0, failed=True) for _ in range(n)]
            run.outcomes += failed
            run.items += [Item(-1, "", 1, 0) for _ in failed]
            by_target[i] += failed
        m = classification_metrics(by_target[i], n_deciles)
        per_target.append(
            {
                **eff.summary(),
                "identical": identical.get(i, 0),
                "n": m["n"],
                "n_failed": m["n_failed"],
                "accuracy": m["accuracy"],
                "balanced_accuracy": m["balanced_accuracy"],
                "auroc": m["auroc"],
            }
        )
    run.details = {"per_target": per_target, "identical": sum(identical.values())}
    return run


class Intervention(Scorer):
    name = "intervention"
    stream = 6
    needs = Needs(subject_model=True)
    outcome = "prompt"  # outcome "windows" are the sequences the prompts were cut from
    evidence = "steering"
    calls_exact = False  # an unreached target, or a steered continuation like the clean one, asks nothing

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> tuple[list[TargetEffects], list[PairItem], dict]:
        effects = ctx.steering_effects(latent, "score", ctx.cfg.score.kl_targets)
        return (effects, *pair_items(effects, rng))

    async def run(self, ctx, explanation: str, state) -> Scored:
        effects, items, identical = state
        template, llm, sc = ctx.prompts.get(self.name), ctx.cfg.llm, ctx.cfg.score
        reqs = [
            intervention_request(
                template,
                explanation,
                it,
                seed=llm.seed,
                top_logprobs=llm.top_logprobs,
                json_output=ctx.json_output,
                temperature=llm.temperature,
            )
            for it in items
        ]
        responses = await ctx.complete(reqs) if reqs else []
        run = intervention_run(effects, items, identical, responses, ctx.n_deciles)
        return llm_scored(
            ctx,
            self.name,
            run,
            kl_targets=sc.kl_targets,
            intervention_prompts=sc.intervention_prompts,
            prompt_tokens=sc.intervention_prompt_tokens,
            new_tokens=sc.intervention_new_tokens,
        )

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return len(cfg.score.kl_targets) * cfg.score.intervention_prompts  # an upper bound

    def rough_tokens(self, cfg, prompts) -> tuple[int, int]:
        sc = cfg.score
        base = template_tokens(prompts, self.name, explanation=ROUGH_EXPLANATION, prompt="", a="", b="")
        return base + sc.intervention_prompt_tokens + 2 * sc.intervention_new_tokens, 16
