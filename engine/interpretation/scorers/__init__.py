"""Scorers: each tests an explanation a different way (see the module of each name).

detection, fuzzing, simulation, intruder, generation and intervention ask the explainer/scorer LLM;
embedding (a sentence-embedding model) and surprisal (a base language model's loss) make no LLM call."""

WITHOUT_LLM = frozenset({"embedding", "surprisal"})


def needs_llm(scorers) -> bool:
    return any(s not in WITHOUT_LLM for s in scorers)
