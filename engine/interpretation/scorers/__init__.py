"""Scorers: each tests an explanation a different way (see the module of each name).

detection, fuzzing, simulation, intruder, generation, intervention and saebench (SAEBench's autointerp protocol)
ask the explainer/scorer LLM;
embedding (a sentence-embedding model) and surprisal (a base language model's loss) make no LLM call.

`SCORERS` is the one registry: the stage, the config's check of scorer names, the dry run, the report and the
export read it. A new scorer is one module with a `Scorer` subclass (protocol.py) and one line here.
"""

from __future__ import annotations

from . import detection, embedding, fuzzing, generation, intervention, intruder, saebench, simulation, surprisal
from .protocol import Needs, Scored, Scorer, ScorerContext

SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        detection.Detection(),
        fuzzing.Fuzzing(),
        embedding.EmbeddingScorer(),
        surprisal.SurprisalScorer(),
        simulation.Simulation(),
        intruder.Intruder(),
        generation.Generation(),
        intervention.Intervention(),
        saebench.SAEBench(),
    )
}


def needs_llm(scorers) -> bool:
    """Whether any of these scorers asks the LLM (an unknown name counts as asking: the stage will refuse it)."""
    return any(s not in SCORERS or SCORERS[s].needs.llm for s in scorers)


def primary_metric(scorer: str, default: str = "balanced_accuracy") -> str:
    """The metric a scorer is sorted and summarised by; `default` for a name no scorer here has (older files)."""
    s = SCORERS.get(scorer)
    return s.primary_metric if s is not None else default


__all__ = ["SCORERS", "Needs", "Scored", "Scorer", "ScorerContext", "needs_llm", "primary_metric"]
