"""Best-of-N explanations: draw several, score each on the explainer's side of the sample set, keep the best.

Transluce described every neuron of Llama-3.1-8B this way with an 8B explainer. The candidates are scored only on
the explainer's own examples and on explainer-side non-activating windows (the sample set's `explain_non` role):
picking by the held-out examples would let the final scores reward the pick instead of the explanation.
"""

from __future__ import annotations

import dataclasses

from autointerp.engine.interpretation.llm.base import stored_answer
from autointerp.engine.interpretation.scorers.base import Accounting

from .explainers import parse_explanation
from .llm import LLMRequest, LLMResponse
from .tally import COPIED_DEMONSTRATION

PICK_STREAM = 0xB0  # the draw of the pick scorer's item order, apart from the held-out scorers' streams
NO_PICK_EXAMPLES = "no explainer-side non-activating windows in this latent's sample set: kept the first candidate"


def candidate_requests(req: LLMRequest, n: int, temperature: float, seed: int) -> list[LLMRequest]:
    """N draws of the same prompt: sampled (temperature > 0), each with its own seed, so each is reproducible."""
    return [dataclasses.replace(req, temperature=temperature, seed=seed + i) for i in range(n)]


def read_candidates(responses: list[LLMResponse], demonstrated: set[str], temperature: float, seed: int) -> list[dict]:
    """One candidate row per answer, in draw order (parsed as a single explanation is)."""
    rows = []
    for i, r in enumerate(responses):
        text, error = parse_explanation(r.text) if r.ok else (None, r.error)
        if text is not None and text.lower() in demonstrated:
            text, error = None, COPIED_DEMONSTRATION
        acc = Accounting()
        acc.add(r)
        rows.append(
            {
                "idx": i,
                "text": text,
                "error": error,
                "raw": stored_answer(r.text),
                "llm_seed": seed + i,
                "temperature": temperature,
                "accounting": acc,
            }
        )
    return rows


def choose(rows: list[dict]) -> int | None:
    """The index of the candidate to keep: the highest pick score (the earliest draw on a tie); with no score at all,
    the first that has a text; None when every draw failed."""
    scored = [r for r in rows if r.get("score") is not None]
    if scored:
        return max(scored, key=lambda r: (r["score"], -r["idx"]))["idx"]
    usable = [r for r in rows if r["text"] is not None]
    return usable[0]["idx"] if usable else None


def summed(accountings: list[Accounting]) -> Accounting:
    """Calls, tokens and time over several rows' accounting (cached tokens unknown once any row says -1)."""
    out = Accounting()
    for a in accountings:
        out.n_calls += a.n_calls
        out.n_failed_calls += a.n_failed_calls
        out.prompt_tokens += a.prompt_tokens
        out.output_tokens += a.output_tokens
        out.llm_seconds += a.llm_seconds
        out.cached_tokens = -1 if a.cached_tokens < 0 or out.cached_tokens < 0 else out.cached_tokens + a.cached_tokens
    return out
