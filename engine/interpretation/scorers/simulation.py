"""Simulation (Bills et al. 2023, OpenAI's neuron explainer): the scorer reads an explanation and one
excerpt's tokens and predicts an activation 0-10 for every token; the score is the Pearson correlation
between predicted and true activations, pooled over all tokens (and averaged per excerpt).

Two kinds of prediction per token:
- the integers of the (schema-constrained) JSON answer;
- with logprobs, the expected value sum_v p(v) * v over the digit alternatives at the position where
  each number was generated (the paper's method). A number spelled by several tokens ("10" is "1", "0"
  in SmolLM2's tokenizer), or logprobs that cannot be aligned with the answer, keep the integer.

Note on "1" vs "10": where a tokenizer spells 10 as "1" + "0", the alternative "1" at a number's first
token stands for both 1 and 10; it is counted as 1. Tokenizers with a single "10" token do not have this
ambiguity.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np

from autointerp.engine.interpretation.examples import Example, plain
from autointerp.engine.interpretation.llm import LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import NOT_JSON, answer_json, never_raises
from autointerp.engine.interpretation.metrics import ExampleOutcome
from autointerp.engine.interpretation.prompts import PromptTemplate

from .base import Item, ScoredRun
from .protocol import ROUGH_EXPLANATION, Scored, Scorer, llm_scored, template_tokens

MAX_ACTIVATION = 10


def simulation_schema(n: int) -> dict:
    return {
        "type": "object",
        "properties": {
            "activations": {
                "type": "array",
                "items": {"type": "integer", "enum": list(range(MAX_ACTIVATION + 1))},
                "minItems": n,
                "maxItems": n,
            }
        },
        "required": ["activations"],
    }


def show_token(token: str) -> str:
    """A token as a JSON string: quotes show leading/trailing spaces, and a line break or tab is `\\n`/`\\t`,
    so a whitespace-only token never vanishes."""
    return json.dumps(token, ensure_ascii=False)


def token_lines(tokens: list[str]) -> str:
    """One token per line, numbered from 1: `3: " milk"`."""
    return "\n".join(f"{i}: {show_token(t)}" for i, t in enumerate(tokens, 1))


def simulation_request(
    template: PromptTemplate,
    explanation: str,
    tokens: list[str],
    *,
    seed: int | None,
    top_logprobs: int,
    json_output: bool,
    temperature: float = 0.0,
) -> LLMRequest:
    """One excerpt per prompt; the instructions and explanation come first, the tokens last."""
    n = len(tokens)
    messages = template.render(explanation=explanation, tokens=token_lines(tokens), n=str(n))
    # {"activations": [ ... ]} costs ~8 tokens; each number is 1-2 digit tokens plus "," and " ".
    return LLMRequest(
        messages,
        max_tokens=16 + 4 * n,
        temperature=temperature,
        seed=seed,
        top_logprobs=top_logprobs,
        json_schema=simulation_schema(n) if json_output else None,
    )


@dataclass
class SimulationAnswer:
    """A parsed answer. Unpacks as `(values, expected, error)`.

    values: the answer's integers (float array) or None on failure; expected: per-token expected values
    from logprobs (integers where a position could not use them) or None without logprobs; n_expected:
    how many positions got an expected value; error: why the answer could not be used."""

    values: np.ndarray | None = None
    expected: np.ndarray | None = None
    error: str | None = None
    n_expected: int = 0

    def __iter__(self):
        return iter((self.values, self.expected, self.error))

    @property
    def prediction(self) -> np.ndarray | None:
        """What the score uses: the expected values where there are logprobs, else the integers."""
        return self.expected if self.expected is not None else self.values


_KEY = re.compile(r'"activations"\s*:\s*\[')
_LIST = re.compile(r"\[\s*(-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)*)\s*\]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _as_int(x) -> int | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    if isinstance(x, float) and not (math.isfinite(x) and x.is_integer()):
        return None
    return int(x)


def _number_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the numbers inside the answer's list: after `"activations": [` when the key is
    there, else inside the first bracketed list of numbers."""
    m = _KEY.search(text)
    if m:
        start = m.end()
    else:
        m = _LIST.search(text)
        if not m:
            return []
        start = m.start(1)
    end = text.find("]", start)
    end = len(text) if end < 0 else end
    return [(x.start(), x.end()) for x in _NUMBER.finditer(text, start, end)]


@never_raises(lambda why: SimulationAnswer(error=why))
def parse_simulation(r: LLMResponse, n: int) -> SimulationAnswer:
    """An answer -> SimulationAnswer(values, expected or None, None) or SimulationAnswer(error=why)."""
    if not r.ok:
        return SimulationAnswer(error=r.error)
    text = r.text or ""
    raw = None
    obj = answer_json(text)
    if obj is not NOT_JSON:
        if isinstance(obj, dict) and isinstance(obj.get("activations"), list):
            raw = obj["activations"]
        elif isinstance(obj, list):  # a bare list, from a backend that ignores the schema
            raw = obj
    else:
        m = _LIST.search(text)  # a list of numbers inside a chatty answer
        raw = [float(x) for x in _NUMBER.findall(m.group(1))] if m else None
    if raw is None:
        return SimulationAnswer(error="unparseable answer")
    as_ints = [_as_int(x) for x in raw]
    ints = [v for v in as_ints if v is not None]
    if len(ints) != len(as_ints):
        return SimulationAnswer(error="unparseable answer")
    if len(ints) != n:
        return SimulationAnswer(error=f"wrong number of activations ({len(ints)} for {n} tokens)")
    if any(not 0 <= v <= MAX_ACTIVATION for v in ints):
        return SimulationAnswer(error="activation outside 0-10")
    values = np.array(ints, dtype=np.float64)
    expected, n_expected = _expected_values(r, text, values)
    return SimulationAnswer(values, expected, None, n_expected)


def _expected_values(r: LLMResponse, text: str, values: np.ndarray) -> tuple[np.ndarray | None, int]:
    """Per number: E[v] over the digit alternatives where the number is one generated token; else the integer."""
    if not r.logprobs:
        return None, 0
    expected = values.copy()
    pieces = [t.token for t in r.logprobs]
    joined = "".join(pieces)
    offset = joined.find(text) if text else -1  # the tokens may carry more (an end-of-turn mark)
    if offset < 0:
        return expected, 0  # the tokens do not spell the answer
    spans = _number_spans(text)
    if len(spans) != len(values) or any(float(text[a:b]) != v for (a, b), v in zip(spans, values)):
        return expected, 0
    spans = [(a + offset, b + offset) for a, b in spans]
    text = joined
    starts = np.cumsum([0] + [len(p) for p in pieces])  # character offset where each token begins
    n_used = 0
    for k, (a, b) in enumerate(spans):
        i = int(np.searchsorted(starts, a, side="right")) - 1  # the token holding the number's first char
        if i >= len(pieces) or starts[i + 1] < b or pieces[i].strip() != text[a:b]:
            continue  # spelled by several tokens, or the token holds more than the number: keep the integer
        e = _expectation(r.logprobs[i])
        if e is not None:
            expected[k] = e
            n_used += 1
    return expected, n_used


def _expectation(t) -> float | None:
    """sum_v p(v) * v over the alternatives that are integers 0..10, renormalised over them."""
    alts = dict(t.top)
    if t.token not in alts and math.isfinite(t.logprob):
        alts[t.token] = t.logprob  # the generated token, should the top-k leave it out
    p = np.zeros(MAX_ACTIVATION + 1)
    for s, lp in alts.items():
        s = s.strip()
        if s.isdigit() and s.isascii() and int(s) <= MAX_ACTIVATION and math.isfinite(lp):
            p[int(s)] += math.exp(lp)
    total = p.sum()
    if total <= 0:
        return None
    return float(p @ np.arange(MAX_ACTIVATION + 1) / total)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def simulation_correlations(true: list[np.ndarray], predicted: list[np.ndarray | None]) -> dict:
    """Pearson correlation between true and predicted activations, over the examples with a prediction.

    correlation: pooled over all their tokens (None if either side is constant); mean_example_correlation:
    the mean of per-example correlations over examples whose both sides vary (None if there are none)."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true activation arrays for {len(predicted)} predictions")
    pairs = []
    for t, p in zip(true, predicted):
        if p is None:
            continue
        t, p = np.asarray(t, np.float64).ravel(), np.asarray(p, np.float64).ravel()
        if len(t) != len(p):
            raise ValueError(f"an example has {len(t)} true activations but {len(p)} predictions")
        pairs.append((t, p))
    pooled = None
    if pairs:
        pooled = _pearson(np.concatenate([t for t, _ in pairs]), np.concatenate([p for _, p in pairs]))
    per_example = [c for c in (_pearson(t, p) for t, p in pairs) if c is not None]
    return {
        "correlation": pooled,
        "mean_example_correlation": float(np.mean(per_example)) if per_example else None,
        "n_examples": len(pairs),
        "n_tokens": int(sum(len(t) for t, _ in pairs)),
        "n_example_correlations": len(per_example),
    }


class Simulation(Scorer):
    name = "simulation"
    evidence = "predictions"
    stream = 3
    primary_metric = "correlation"

    def prepare(self, ctx, latent, sample_set, act, non, rng) -> list[Example]:
        # half activating (strongest first, spread over the deciles), half non-activating
        n = ctx.cfg.score.simulation_examples
        k = min(-(-n // 2), len(act))
        strong = sorted(act, key=lambda ex: -ex.max_act)
        picked = [strong[int(i)] for i in np.unique(np.linspace(0, len(strong) - 1, k).round())] if k else []
        return picked + non[: n - len(picked)]

    async def run(self, ctx, explanation: str, examples: list[Example]) -> Scored:
        template, llm = ctx.prompts.get(self.name), ctx.cfg.llm
        reqs = [
            simulation_request(
                template,
                explanation,
                ex.tokens,
                seed=llm.seed,
                top_logprobs=llm.top_logprobs,
                json_output=ctx.json_output,
                temperature=llm.temperature,
            )
            for ex in examples
        ]
        responses = await ctx.complete(reqs)
        run, n_expected = ScoredRun([], []), 0
        predicted: list[np.ndarray | None] = []
        for ex, r in zip(examples, responses):
            run.accounting.add(r)
            run.items.append(Item(ex.window, plain(ex), int(ex.decile > 0), ex.decile))
            parsed = parse_simulation(r, len(ex.tokens))
            values, expected, error = parsed.values, parsed.expected, parsed.error
            if error is not None:
                run.errors[error] += 1
                run.outcomes.append(ExampleOutcome(int(ex.decile > 0), ex.decile, failed=True))
                predicted.append(None)
                continue
            sim = expected if expected is not None else values
            n_expected += parsed.n_expected
            predicted.append(sim)
            # As a classifier: "fires somewhere" when any token is predicted above 0; ranked by the peak.
            label = int(ex.decile > 0)
            run.outcomes.append(ExampleOutcome(label, ex.decile, int(values.max() > 0), float(sim.max()) / 10))
        run.details = simulation_correlations([ex.acts for ex in examples], predicted)
        run.truth = [ex.acts for ex in examples]
        # Every excerpt's per-token prediction (0-10, null for a failed one), in outcome order: the evidence the
        # TUI shows beside the true activations (a few excerpts of a window's tokens: small).
        run.details["predicted"] = [None if p is None else [round(float(v), 3) for v in p] for p in predicted]
        # tokens whose prediction is an expected value over the digit logprobs (the rest: the answer's integer)
        run.details["n_expected_values"] = n_expected
        return llm_scored(ctx, self.name, run, simulation_examples=ctx.cfg.score.simulation_examples)

    def calls(self, cfg, n_act: int, n_non: int) -> int:
        n = cfg.score.simulation_examples
        k = min(-(-n // 2), n_act)
        return k + min(n - k, n_non)

    def rough_tokens(self, cfg, prompts) -> tuple[int, int]:
        w = cfg.cache.window_len
        base = template_tokens(prompts, self.name, explanation=ROUGH_EXPLANATION, tokens="", n=str(w))
        return base + 4 * w, 4 * w + 16
