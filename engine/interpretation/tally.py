"""What a stage did, counted latent by latent: for progress bars, the final line and the all-failed check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

COPIED_DEMONSTRATION = "copied a few-shot demonstration"  # an answer that parsed, and says nothing of this latent


@dataclass
class StageTally:
    """What a stage did, for progress bars and the final line."""

    done: int = 0
    skipped: int = 0  # already in the store, or too few windows
    failed: int = 0  # explanations that failed / examples whose scoring call failed
    prompts: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    backend_s: float = 0.0
    answered: int = 0  # LLM answers that parsed (explanations, or examples labelled by an answer)
    reasons: Counter = field(default_factory=Counter)  # why latents were skipped
    errors: Counter = field(default_factory=Counter)  # why explanations / examples failed

    @property
    def all_failed(self) -> bool:
        """LLM calls were made and not one answer was usable."""
        return self.prompts > 0 and self.answered == 0

    def failure_summary(self, n: int = 2) -> str:
        return "; ".join(f"{k} ({v})" for k, v in self.errors.most_common(n)) or "no reason recorded"

    def add_accounting(self, row: dict) -> None:
        self.prompts += row["n_calls"]
        self.prompt_tokens += row["prompt_tokens"]
        self.cached_tokens += max(row["cached_tokens"], 0)
        self.output_tokens += row["output_tokens"]
        self.backend_s += row["llm_seconds"]

    def add_latent(self, stage: str, rows: list[dict], why: str | None) -> None:
        """One latent's stored rows (its explanation, or its score rows; none when skipped) and why it was
        skipped or partly done."""
        if rows:
            self.done += 1
        else:
            self.skipped += 1
        for r in rows:
            self.add_accounting(r)
            if stage == "explain":
                self.failed += r["text"] is None
                self.answered += r["text"] is not None or r["error"] == COPIED_DEMONSTRATION
                if r["text"] is None:
                    self.errors[r["error"]] += 1
            else:
                self.failed += r["n_failed"]
                self.answered += r["n_scored"] if r["n_calls"] else 0
                self.errors.update(r["errors"])
        if why:
            self.reasons[why] += 1
