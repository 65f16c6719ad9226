"""SAEBench's autointerp score: one judge prompt per explanation, the fraction of its sequences classified right.

The protocol follows SAEBench (github.com/adamkarvonen/SAEBench, read at commit 8042bb38):
`sae_bench/evals/autointerp/eval_config.py` (AutoInterpEvalConfig: `n_top_ex_for_scoring` = 2,
`n_iw_sampled_ex_for_scoring` = 2, `n_random_ex_for_scoring` = 10, so 14 sequences of which 4 activate;
`max_tokens_in_prediction` = 2 x 14 + 5) and `sae_bench/evals/autointerp/main.py` (`AutoInterp.gather_data`: the
sequences, shuffled together; `get_scoring_prompts`: the judge names the sequences it expects to fire as
comma-separated numbers, or "None"; `parse_predictions`: "and" read as a comma, "None" as no number, anything but
numbers unparseable; `score_predictions`: the share of all shown sequences classified right). The importance
weights are those of `sae_bench/sae_bench_utils/indexing_utils.py` `get_iw_sample_indices`: squared activations.

What we take from our own held-out windows (never the explainer's): the 2 strongest activating windows, 2 more
drawn from the remaining activating ones with probability proportional to their summed squared activations (the
token-level squared weights of SAEBench, added up over the window), and 10 non-activating windows drawn at random.
Each shown sequence is one outcome, so `accuracy` is SAEBench's per-latent score. Two strictnesses of ours: an
answer that names a number outside 1..n, or anything that is not numbers, fails the whole prompt (counted in
n_failed, never as wrong); SAEBench drops an unparseable latent and ignores out-of-range numbers.
"""

from __future__ import annotations

import re

import numpy as np

from autointerp.engine.interpretation.examples import Example, plain
from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import never_raises
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.prompts import PromptTemplate

from .base import Item, ScoredRun
from .protocol import ROUGH_EXPLANATION, Scored, Scorer, llm_scored, template_tokens

# SAEBench's scoring mix (eval_config.py defaults).
N_TOP, N_WEIGHTED, N_RANDOM = 2, 2, 10
KINDS = ("top", "weighted", "random")


def saebench_items(
    activating: list[Example], non_activating: list[Example], rng: np.random.Generator
) -> list[tuple[Item, str]]:
    """The sequences one prompt shows, shuffled, and each one's kind (top / weighted / random), aligned.

    `activating` / `non_activating`: the latent's held-out windows (roles "activating" / "non_activating")."""
    order = sorted(range(len(activating)), key=lambda i: (-activating[i].max_act, activating[i].window))
    top = order[:N_TOP]
    rest = order[N_TOP:]
    weighted: list[int] = []
    if rest:
        w = np.array([float(np.square(activating[i].acts.astype(np.float64)).sum()) for i in rest])
        k = min(N_WEIGHTED, len(rest))
        p = w / w.sum() if w.sum() > 0 and np.count_nonzero(w) >= k else None  # None: uniform
        weighted = [rest[int(j)] for j in rng.choice(len(rest), size=k, replace=False, p=p)]
    n_random = min(N_RANDOM, len(non_activating))
    random = [int(j) for j in rng.choice(len(non_activating), size=n_random, replace=False)] if n_random else []
    items = [(Item(activating[i].window, plain(activating[i]), 1, activating[i].decile), "top") for i in top]
    items += [(Item(activating[i].window, plain(activating[i]), 1, activating[i].decile), "weighted") for i in weighted]
    items += [(Item(non_activating[i].window, plain(non_activating[i]), 0, 0), "random") for i in random]
    return [items[i] for i in rng.permutation(len(items))]


def example_answer(n: int, n_positive: int, rng: np.random.Generator) -> str:
    """The made-up answer the instructions show as a format example: as many numbers as sequences activate
    (SAEBench draws them at random too; ours come from the scorer's seed stream, so a rerun shows the same)."""
    k = min(max(n_positive, 1), n)
    return ", ".join(str(int(i)) for i in sorted(rng.choice(np.arange(1, n + 1), size=k, replace=False)))


def saebench_request(
    template: PromptTemplate, explanation: str, texts: list[str], answer_example: str, *, seed: int, temperature: float
) -> LLMRequest:
    """One prompt: the sequences numbered "1. ..." as SAEBench numbers them; a free-text answer (its format is
    the protocol's, so no JSON schema); SAEBench's answer budget of 2 tokens a sequence + 5, doubled for tokenisers
    that spell "10" in two tokens."""
    examples = "\n".join(f"{i}. {t}" for i, t in enumerate(texts, 1))
    messages = template.render(
        explanation=explanation.strip().rstrip("."), examples=examples, n=str(len(texts)), example_answer=answer_example
    )
    return LLMRequest(messages, max_tokens=4 * len(texts) + 10, temperature=temperature, seed=seed)


_AND = re.compile(r"\band\b", re.IGNORECASE)
_NONE = re.compile(r"\bnone\b", re.IGNORECASE)


@never_raises(lambda why: (None, why))
def parse_named(r: LLMResponse, n: int) -> tuple[set[int] | None, str | None]:
    """An answer -> (the 1-based sequence numbers named, None) or (None, why not). Read as SAEBench reads it
    (main.py `parse_predictions`), with surrounding quotes or brackets allowed; numbers outside 1..n fail."""
    if not r.ok:
        return None, r.error
    text = (r.text or "").strip().strip("\"'`[]").strip().rstrip(".").strip()
    parts = [p.strip() for p in _NONE.sub("", _AND.sub(",", text)).split(",")]
    parts = [p for p in parts if p]
    if not parts:
        return (set(), None) if text else (None, "empty answer")
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None, "unparseable answer"
    named = {int(p) for p in parts}
    outside = sorted(i for i in named if not 1 <= i <= n)
    if outside:
        return None, f"sequence {outside[0]} is not a sequence number (1-{n})"
    return named, None


class SAEBench(Scorer):
    name = "saebench"
    stream = 7
    primary_metric = "accuracy"  # SAEBench's autointerp score: the share of the shown sequences classified right
    fallback_metric = "balanced_accuracy"
    outcome = "window"
    evidence = "labels"

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> dict:
        shown = saebench_items(act, non, rng)
        n_pos = sum(it.label for it, _ in shown)
        return {
            "items": [it for it, _ in shown],
            "kinds": [k for _, k in shown],
            "answer": example_answer(len(shown), n_pos, rng) if shown else "",
        }

    async def run(self, ctx, explanation: str, state: dict) -> Scored:
        items, kinds = state["items"], state["kinds"]
        run = ScoredRun([], list(items))
        counts = {k: kinds.count(k) for k in KINDS}
        named: list[int] | None = None
        if items:
            llm = ctx.cfg.llm
            req = saebench_request(
                ctx.prompts.get(self.name),
                explanation,
                [it.text for it in items],
                state["answer"],
                seed=llm.seed,
                temperature=llm.temperature,
            )
            (r,) = await ctx.complete([req])
            run.accounting.add(r)
            chosen, error = parse_named(r, len(items))
            if error is not None:
                run.errors[error] += len(items)
            else:
                named = sorted(chosen)
            for i, it in enumerate(items, 1):
                if chosen is None:
                    run.outcomes.append(ExampleOutcome(it.label, it.decile, failed=True))
                else:
                    run.outcomes.append(ExampleOutcome(it.label, it.decile, int(i in chosen)))
        run.details = {
            "kinds": kinds,  # per outcome, in the order shown: top / weighted / random
            "named": named,  # the sequence numbers (1-based, as shown) the judge named; None: failed
            "none_baseline": counts["random"] / len(items) if items else None,  # what answering "None" scores
        }
        return llm_scored(ctx, self.name, run, saebench_mix=counts)

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        return 1 if n_act + n_non else 0

    def rough_tokens(self, cfg, prompts) -> tuple[int, int]:
        n = N_TOP + N_WEIGHTED + N_RANDOM
        answer = ", ".join(str(i) for i in range(1, N_TOP + N_WEIGHTED + 1))
        base = template_tokens(
            prompts, self.name, explanation=ROUGH_EXPLANATION, examples="", n=str(n), example_answer=answer
        )
        return base + n * (cfg.cache.window_len + 4), 4 * n + 10
