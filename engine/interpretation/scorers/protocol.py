"""What a scorer is: one object that the explain/score stage, the config check, the dry run, the report and the
export all read (the registry, `SCORERS` in this package, maps each name to one).

Per latent the stage calls `prepare` once (the excerpts to show, drawn from the scorer's own seed stream) and
`run` twice on what it prepared: for the latent's explanation and for its random-explanation control.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple, Protocol

import numpy as np

from autointerp.store.scorer_meta import ScorerMeta

from .base import Item, ScoredRun, label_requests, outcomes_from

if TYPE_CHECKING:
    from autointerp.engine.config import Config
    from autointerp.engine.interpretation.embedding import Embedder
    from autointerp.engine.interpretation.examples import Example
    from autointerp.engine.interpretation.llm import LLMBackend, LLMRequest, LLMResponse
    from autointerp.engine.interpretation.prompts import PromptLibrary
    from autointerp.store.results import SampleSet


@dataclass(frozen=True)
class Needs:
    """The parts a scorer uses besides the store (loaded lazily, only when a configured scorer needs them)."""

    llm: bool = True  # the explainer/scorer LLM backend
    subject_model: bool = False  # the subject model and coder (probe, steering)
    embedder: bool = False  # a sentence-embedding model
    base_lm: bool = False  # a base language model (surprisal)


class Scored(NamedTuple):
    """One explanation scored: what the score row stores besides the metrics."""

    run: ScoredRun
    model: str
    backend: str
    prompt_sha: str
    settings: dict


class ScorerContext(Protocol):
    """What a scorer may use of the stage: the loaded models (resources.py) and the LLM call (llm_calls.py), as
    engine/interpretation/scorer_context.py's StageContext gives them."""

    @property
    def cfg(self) -> Config: ...
    @property
    def prompts(self) -> PromptLibrary: ...
    @property
    def backend(self) -> LLMBackend: ...  # the LLM scorers' (the stage has one whenever a scorer needs it)
    @property
    def json_output(self) -> bool: ...  # ask for JSON answers (a schema), or free text
    @property
    def n_deciles(self) -> int: ...
    @property
    def embedder(self) -> Embedder: ...
    @property
    def base_lm(self) -> Any: ...  # surprisal.BaseLM
    @property
    def probe(self) -> Any: ...  # activations.probe.LatentProbe

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list: ...

    async def complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """One answer per request; calls that found no server are retried through the stage's outage pause."""

    def off_loop(self, fn: Callable, *args) -> Awaitable:
        """Run `fn(*args)` on the store's worker thread (model and store work, off the event loop)."""

    def settings(self, **more) -> dict:
        """What an LLM's answer depended on besides the prompt and the examples, plus `more`."""


class Scorer:
    """One way of testing an explanation. Subclasses set the class attributes and define `prepare` and `run`."""

    name: str = ""
    # The latent's excerpt order is drawn from (sample seed, latent, stream): keyed by scorer, not by its place
    # in the configured list, so `--scorers detection` alone reproduces the default run's detection prompts.
    # Scorers that share a stream see the same excerpts (detection, embedding and surprisal).
    stream: int = 0
    needs: Needs = Needs()
    primary_metric: str = "balanced_accuracy"  # the metric it is sorted and summarised by
    fallback_metric: str = "auroc"  # shown for a latent whose primary metric is undefined
    outcome: str = "window"  # what one outcome is (store/scorer_meta.py OUTCOMES)
    evidence: str = "labels"  # how its evidence renders (store/scorer_meta.py EVIDENCE)
    calls_exact: bool = True  # the dry run's call count is exact, not an upper bound

    @property
    def meta(self) -> ScorerMeta:
        """What readers of the file need to know of this scorer, recorded when it scores (store/scorer_meta.py)."""
        return ScorerMeta(self.name, self.primary_metric, self.fallback_metric, self.outcome, self.evidence)

    @property
    def outcomes_are_windows(self) -> bool:
        """Outcome windows are cached windows (export shows their tokens)."""
        return self.meta.outcomes_are_windows

    def check(self, cfg: Config) -> str | None:
        """A setting of this scorer that cannot work, in one line (checked before any latent); None if fine."""
        return None

    def prepare(
        self,
        ctx: ScorerContext,
        latent: int,
        sample_set: SampleSet,
        act: list[Example],
        non: list[Example],
        rng: np.random.Generator,
    ) -> Any:
        """What `run` needs besides the explanation, made once per latent on the store's worker thread and shared
        by the explanation and its control. `act` / `non`: the held-out activating / non-activating examples."""
        raise NotImplementedError

    async def run(self, ctx: ScorerContext, explanation: str, state: Any) -> Scored:
        raise NotImplementedError

    def calls(self, cfg: Config, n_act: int, n_non: int) -> int:
        """LLM calls one explanation costs, for a latent with these held-out example counts (the dry run)."""
        return 0

    def rough_tokens(self, cfg: Config, prompts: PromptLibrary) -> tuple[int, int]:
        """(prompt tokens, output token budget) of one call, from the prompt file and the excerpt sizes (the dry
        run, before any row measured them)."""
        return 0, 0


class LabelScorer(Scorer):
    """Detection and fuzzing: items labelled 0/1 by the LLM, several per prompt (label_requests)."""

    def items(self, state: Any) -> list[Item]:
        """The items to label, from what `prepare` made."""
        return state

    async def run(self, ctx: ScorerContext, explanation: str, state: Any) -> Scored:
        llm, sc = ctx.cfg.llm, ctx.cfg.score
        batches = label_requests(
            ctx.prompts.get(self.name),
            explanation,
            self.items(state),
            sc.examples_per_prompt,
            seed=llm.seed,
            top_logprobs=llm.top_logprobs,
            json_output=ctx.json_output,
            temperature=llm.temperature,
        )
        run = outcomes_from(batches, await ctx.complete([req for req, _ in batches]))
        return llm_scored(
            ctx,
            self.name,
            run,
            examples_per_prompt=sc.examples_per_prompt,
            fuzz_incorrect_fraction=sc.fuzz_incorrect_fraction,
        )

    def rough_tokens(self, cfg: Config, prompts: PromptLibrary) -> tuple[int, int]:
        per = cfg.score.examples_per_prompt
        base = template_tokens(prompts, self.name, explanation=ROUGH_EXPLANATION, examples="", n=str(per))
        return base + per * (cfg.cache.window_len + 4), 8 + 4 * per


def llm_scored(ctx: ScorerContext, template: str, run: ScoredRun, **settings) -> Scored:
    """A run scored by the LLM backend with the prompt `template`."""
    return Scored(run, ctx.backend.model, ctx.backend.name, ctx.prompts.get(template).sha, ctx.settings(**settings))


ROUGH_EXPLANATION = "x" * 60  # an explanation's length, for rough token counts


def template_tokens(prompts: PromptLibrary, name: str, **values) -> int:
    """A prompt file's tokens with these values, at about 4 characters per token."""
    messages = prompts.get(name).render(**values)
    return sum(len(m["content"]) for m in messages) // 4
