"""Explain and score latents over a store: the stage between the activation cache and the report.

Per latent: draw its examples (seeded, disjoint sets), explain from the explainer's set, then score the
explanation and a random-explanation control (another latent's explanation) on the held-out set with
each scorer. One latent's prompts go to the backend together and in prefix order (instructions and
explanation first, excerpts last), so the backend's prefix cache serves the shared part. Store and
sampling work runs on one worker thread, off the event loop, while the backend answers another latent.

This module is one latent's work. Beside it: stage.py runs a stage over many latents (tally.py counts it,
outage.py waits out an unreachable backend, errors.py names its faults; all importable from here as before);
resources.py loads the models on first use; llm_calls.py is the LLM call; each explainer and each scorer is one
object (explainers/'s EXPLAINERS, scorers/'s SCORERS), seeing the stage through scorer_context.py.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable

import numpy as np

from autointerp.engine.config import CacheConfig, Config, resolve_profile
from autointerp.engine.interpretation.llm.base import stored_answer
from autointerp.engine.interpretation.scorers.base import Accounting, ScoredRun
from autointerp.store.db import ActivationStore
from autointerp.store.killpoints import kill_point
from autointerp.store.latent_reads import live_latents
from autointerp.store.queries import WindowQueries
from autointerp.store.results import Results, SampleSet

from . import best_of
from .errors import BackendUnavailable, InterpretError, StageFailed  # noqa: F401
from .examples import Example
from .explainers import EXPLAINERS, ExplainPrompt
from .intervals import score_intervals
from .llm import LLMBackend, LLMRequest
from .llm_calls import LLMCalls
from .metrics import classification_metrics
from .outage import Outage
from .resources import Resources
from .scorer_context import StageContext
from .scorers import SCORERS, primary_metric
from .selection import Selection, parse_selection
from .stage import first_error  # noqa: F401
from .stage import run_stage as _run_stage
from .tally import COPIED_DEMONSTRATION, StageTally

ACCOUNTING_KEYS = tuple(vars(Accounting()))  # n_calls, tokens, seconds: what every row accounts


@dataclass
class PreparedExplain:
    """One latent's explain call, ready to send (made on the store's worker thread)."""

    prompt: ExplainPrompt
    seed: int  # the sample set's
    pick: Any = None  # best-of-N: the candidate scorer's state on the explainer's side (None: not picking)


def select_latents(cfg: Config, selection: Selection) -> list[int]:
    """The latents a selection names in a finished cache, read through a read-only connection (a command checking
    its inputs before it writes); a selection that names none is refused."""
    with ActivationStore.open(cfg.db, readonly=True, allow_older=True) as store:
        interp = Interpreter(cfg, store, None)
        try:
            latents = interp.resolve(selection)
        finally:
            interp.close()
    if not latents:
        raise InterpretError(f"latent selection {selection.text!r} matches no live latent")
    return latents


class Interpreter:
    def __init__(self, cfg: Config, store: ActivationStore, backend: LLMBackend | None, results: Results | None = None):
        """`results`: where the stage reads and writes (default the store's originals; a retest's repeat: that
        draw's `Results(db, draw)`)."""
        prov = store.provenance
        if prov is None:
            raise InterpretError(f"{store.path} holds no activation cache yet: run `autointerp cache` first")
        self.store, self.backend = store, backend
        self.cache_cfg = CacheConfig(**json.loads(prov["config"]))
        if not store.stats_done(self.cache_cfg.window_len):
            raise InterpretError(
                f"{store.path}: the cache is not finished (its latent statistics are not complete); "
                "rerun the cache stage (`autointerp batch` or `autointerp cache`) to finish it"
            )
        self.queries = WindowQueries(store, self.cache_cfg.window_len)
        self.results = results if results is not None else store.results
        self.explainer = EXPLAINERS[cfg.explain.explainer]
        cpu_embedded = backend is not None and backend.on_cpu and cfg.llm.model == "embedded"
        self.cfg = cfg = resolve_profile(cfg, cpu_embedded)
        for name in cfg.score.scorers:  # a setting that cannot work is refused before any latent
            problem = SCORERS[name].check(cfg) if name in SCORERS else None
            if problem:
                raise InterpretError(problem)
        self.sample_cfg = cfg.sample
        self.num_latents = int(prov["num_latents"])
        self.resources = Resources(
            cfg, store, self.cache_cfg, self.queries, explainer_negatives=self.explainer.draws_negatives(cfg)
        )
        self.llm = LLMCalls(cfg, backend)
        # One thread owns the SQLite connection's work and the numpy sampling, off the event loop.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="autointerp-store")
        self.context = StageContext(self.resources, self.llm, self.worker)  # what explainers and scorers see
        self._explained: np.ndarray | None = None  # latents with an explanation, for controls
        self._selection: list[int] = []  # the latents of the stage being run

    @property
    def spec(self):
        """The explainer (its older name, still read by commands)."""
        return self.explainer

    def close(self) -> None:
        self.worker.shutdown(wait=True)

    async def off_loop(self, fn: Callable, *args):
        """`fn(*args)` on the store's worker thread (store and sampling work, off the event loop)."""
        return await self.context.off_loop(fn, *args)

    def log_event(self, stage: str, kind: str, message: str, data: dict | None = None) -> None:
        self.worker.submit(self.store.log_event, stage, kind, message, data)

    # ---- selection ----------------------------------------------------------------------------

    def live_latents(self) -> list[int]:
        """Latents with enough activating windows to sample, most frequent first."""
        return live_latents(self.store.db.conn, self.sample_cfg.min_windows)

    def select(self, spec: str | list) -> list[int]:
        return self.resolve(parse_selection(spec))

    def resolve(self, selection: Selection) -> list[int]:
        return self.resolve_counted(selection)[0]

    def resolve_counted(self, selection: Selection) -> tuple[list[int], dict[str, int]]:
        """The selection's latents, and how many each exclusion left out."""
        return selection.resolve_counted(
            self.live_latents(), self.num_latents, self.sample_cfg.seed, self.flagged(selection)
        )

    def flagged(self, selection: Selection) -> dict[str, set[int]]:
        """The latents each of the selection's exclusions names; a filter not computed over this cache is refused."""
        from autointerp.store.filters import filters_current, flagged

        out = {}
        for name in selection.exclude:
            if not filters_current(self.store, name):
                raise InterpretError(
                    f"latent selection {selection.text!r}: {self.store.path} has no {name} filter computed over its "
                    f"cache yet; run `autointerp filters {self.store.path}` first"
                    + (" (it verifies the unigram candidates through the subject model)" if name == "unigram" else "")
                )
            out[name] = flagged(self.store, name)
        return out

    # ---- examples -----------------------------------------------------------------------------

    def examples(self, latent: int, windows, deciles=None) -> list[Example]:
        """Windows -> Examples with this latent's activations (latent -1: windows only, no activations)."""
        return self.resources.examples(latent, windows, deciles)

    def role_examples(self, s: SampleSet, role: str) -> list[Example]:
        return self.resources.role_examples(s, role)

    def sample_set(self, latent: int, redo: bool = False) -> SampleSet:
        s = None if redo else self.results.sample_set(latent)
        if s is None:
            s = self.resources.sampler.draw(latent)
            self.results.write_sample_set(s)
        return s

    # ---- explain ------------------------------------------------------------------------------

    @cached_property
    def _demonstrated(self) -> set[str]:
        return self.explainer.demonstrated(self.resources.prompts)

    def _prepare_explain(self, latent: int, redo: bool) -> tuple[PreparedExplain | None, str | None]:
        if not redo:
            row = self.results.explanation(latent, self.explainer.name)
            if row is not None and row["text"] is not None:
                return None, "already explained"
        s = self.sample_set(latent, redo)
        if s.skipped:
            return None, s.skipped
        prompt = self.explainer.prepare(self.context, latent, s)
        pick = None
        if self.cfg.explain.candidates > 1 and prompt.examples is not None:
            pick = self._pick_state(latent, s, prompt.examples)
        return PreparedExplain(prompt, s.seed, pick), None

    def _pick_state(self, latent: int, s: SampleSet, examples: list[Example]):
        """Best-of-N: the candidate scorer's items from the explainer's examples and explainer-side negatives only
        (None when the sample set has no such negatives: it was drawn before candidates were asked for)."""
        negatives = self.role_examples(s, "explain_non")
        if not negatives:
            return None
        scorer = SCORERS[self.cfg.explain.candidate_scorer]
        rng = np.random.default_rng([s.seed, latent, scorer.stream, best_of.PICK_STREAM])
        return scorer.prepare(self.context, latent, s, examples, negatives, rng)

    async def explain_latent(self, latent: int, redo: bool = False) -> tuple[dict | None, str | None]:
        """Explain one latent; returns (the stored row, None) or (None, why it was skipped)."""
        prepared, skipped = await self.off_loop(self._prepare_explain, latent, redo)
        if prepared is None:
            return None, skipped
        prompt, req, extras = prepared.prompt, prepared.prompt.request, prepared.prompt.extras
        acc = Accounting()
        candidates = None
        if req is None:  # nothing to ask (a steering target out of reach): a counted failure
            text, error, raw = None, prompt.failed, None
        elif self.cfg.explain.candidates > 1:
            text, error, raw, candidates, acc, extras = await self._best_of(latent, req, prepared.pick, extras)
        else:
            (r,) = await self.llm.complete([req])
            text, error = self.explainer.parse(r.text) if r.ok else (None, r.error)
            if text is not None and text.lower() in self._demonstrated:
                # Small models often repeat a few-shot answer word for word: that explains nothing here.
                text, error = None, COPIED_DEMONSTRATION
            acc.add(r)
            raw = stored_answer(r.text)
        assert self.backend is not None, "explaining needs a backend"
        row = {
            "latent": latent,
            "explainer": self.explainer.name,
            "text": text,
            "error": error,
            "raw": raw,
            "model": self.backend.model,
            "backend": self.backend.name,
            "prompt_sha": self.explainer.prompt_sha(self.resources.prompts),
            "seed": prepared.seed,
            "n_examples": prompt.n_examples,
            "extras": extras,
            "settings": self.llm.settings(threshold=self.cfg.explain.threshold, **self._best_of_settings()),
            **acc.as_row(),
        }
        await self.off_loop(self._committed, "explain", self.results.write_explanation, row, candidates)
        return row, None

    @staticmethod
    def _committed(stage: str, write, *args) -> None:
        """`write(*args)`, then the stage's kill point, both on the store's thread: a crash test's kill lands
        right after this latent's commit, before the next latent's write (queued behind it) can commit too."""
        write(*args)
        kill_point(stage)

    def _best_of_settings(self) -> dict:
        ex = self.cfg.explain
        if ex.candidates == 1:
            return {}
        return {
            "candidates": ex.candidates,
            "candidate_temperature": ex.candidate_temperature,
            "candidate_scorer": ex.candidate_scorer,
        }

    async def _best_of(self, latent: int, req: LLMRequest, pick, extras: dict):
        """N candidate explanations, each scored by the candidate scorer on the explainer's side (`pick`); returns
        the kept one's (text, error, raw), the candidate rows, the accounting of every call made, and the extras."""
        ex, seed = self.cfg.explain, self.cfg.llm.seed
        responses = await self.llm.complete(
            best_of.candidate_requests(req, ex.candidates, ex.candidate_temperature, seed)
        )
        rows = best_of.read_candidates(responses, self._demonstrated, ex.candidate_temperature, seed)
        scorer = SCORERS[ex.candidate_scorer]
        metric = scorer.primary_metric
        seen: dict[str, tuple] = {}  # a text drawn twice is scored once
        for r in rows:
            r.update(scorer=ex.candidate_scorer, score=None, n_scored=0, n_failed=0)
            if r["text"] is None or pick is None:
                continue
            if r["text"] not in seen:
                run, *_ = await scorer.run(self.context, r["text"], pick)
                m = classification_metrics(run.outcomes, self.sample_cfg.n_deciles)
                value = run.details.get(metric) if metric not in m else m[metric]
                seen[r["text"]] = (value, m["n_scored"], m["n_failed"])
                r["accounting"] = best_of.summed([r["accounting"], run.accounting])
            r["score"], r["n_scored"], r["n_failed"] = seen[r["text"]]
        chosen = best_of.choose(rows)
        kept = rows[chosen if chosen is not None else 0]
        error = kept["error"]
        if chosen is None:
            error = f"all {len(rows)} candidates failed: {kept['error']}"
        info = {"n": len(rows), "chosen": chosen, "scorer": ex.candidate_scorer, "metric": metric}
        if pick is None:
            info["note"] = best_of.NO_PICK_EXAMPLES
        acc = best_of.summed([r["accounting"] for r in rows])
        stored = [
            {
                "latent": latent,
                "explainer": self.explainer.name,
                **{k: v for k, v in r.items() if k != "accounting"},
                "chosen": int(r["idx"] == chosen),
                **r["accounting"].as_row(),
            }
            for r in rows
        ]
        return kept["text"], error, kept["raw"], stored, acc, {**extras, "best_of": info}

    # ---- score --------------------------------------------------------------------------------

    def control_for(self, latent: int) -> tuple[int, str] | None:
        """Another latent's explanation from the same explainer, chosen by (seed, latent)."""
        if self._explained is None:  # read once per stage, not once per latent
            explained = self.results.explained_latents(self.explainer.name)
            # Drawn from this stage's own selection where it has another explained latent: the choice then
            # does not depend on what other processes (on other latent ranges) have explained meanwhile.
            mine = sorted(set(explained) & set(self._selection))
            self._explained = np.array(mine if len(mine) >= 2 else explained, dtype=np.int64)
        # The draw rng.choice(explained without latent) made, without building that array per latent (O(n) each,
        # hours at a million latents): index i of the others is i of `explained`, or i + 1 past the latent itself.
        explained = self._explained  # ascending
        j = int(np.searchsorted(explained, latent))
        own = j < len(explained) and int(explained[j]) == latent
        n_others = len(explained) - own
        if not n_others:
            return None
        rng = np.random.default_rng([self.sample_cfg.seed, latent, 0xC0])
        i = int(rng.integers(0, n_others))
        other = int(explained[i + 1 if own and i >= j else i])
        return other, self.results.explanation(other, self.explainer.name)["text"]

    def _prepare_score(self, latent: int, redo: bool):
        row = self.results.explanation(latent, self.explainer.name)
        if row is None or row["text"] is None:
            return None, "no explanation"
        s = self.sample_set(latent)
        explanations = [(0, latent, row["text"])]
        control = self.control_for(latent) if self.cfg.score.control else None
        if control is not None:
            explanations.append((1, *control))
        todo = [
            (scorer, c, who, text)
            for scorer in self.cfg.score.scorers
            for c, who, text in explanations
            if redo or not self.results.score_done(latent, self.explainer.name, scorer, c)
        ]
        first = self._first_candidate_todo(latent, redo)
        if not todo and first is None:
            return None, "already scored"
        # (rows that exist but hold failed examples a rerun may fix are scored again, whole)
        act = self.role_examples(s, "activating")
        non = self.role_examples(s, "non_activating")
        needed = [scorer for scorer, *_ in todo] + (first[1] if first else [])
        state = {scorer: self._score_state(scorer, latent, s, act, non) for scorer in dict.fromkeys(needed)}
        return (todo, state, s.seed, control is None, first), None

    def _first_candidate_todo(self, latent: int, redo: bool) -> tuple[str, list[str]] | None:
        """Best-of-N: when another candidate than the first was kept, the first one's text and the scorers still to
        score it with on the held-out examples (the same items as the kept one: a paired comparison)."""
        candidates = self.results.candidates(latent, self.explainer.name)
        if len(candidates) < 2 or candidates[0]["chosen"] or candidates[0]["text"] is None:
            return None
        missing = [sc for sc in self.cfg.score.scorers if redo or sc not in candidates[0]["heldout"]]
        return (candidates[0]["text"], missing) if missing else None

    def _score_state(self, scorer: str, latent: int, s: SampleSet, act: list[Example], non: list[Example]):
        """What a scorer needs besides the explanation, made once per latent (shared by the control)."""
        rng = np.random.default_rng([s.seed, latent, SCORERS[scorer].stream])
        return SCORERS[scorer].prepare(self.context, latent, s, act, non, rng)

    async def score_latent(self, latent: int, redo: bool = False) -> tuple[list[dict], str | None]:
        prepared, skipped = await self.off_loop(self._prepare_score, latent, redo)
        if prepared is None:
            return [], skipped
        todo, state, seed, no_control, first = prepared
        rows = []
        for scorer, control, who, text in todo:  # real then control, scorer by scorer: prefix order
            run, model, backend, sha, settings = await SCORERS[scorer].run(self.context, text, state[scorer])
            rows.append(self._score_row(latent, scorer, control, who, text, run, model, backend, sha, seed, settings))
        heldout = None
        if first is not None:  # what the first candidate would have scored, for the report's best-of-N gain
            text, scorers = first
            extra = []
            for scorer in scorers:
                run, model, backend, sha, settings = await SCORERS[scorer].run(self.context, text, state[scorer])
                extra.append(self._score_row(latent, scorer, 0, latent, text, run, model, backend, sha, seed, settings))
            heldout = {
                "latent": latent,
                "explainer": self.explainer.name,
                "heldout": {
                    r["scorer"]: {
                        "value": r.get(primary_metric(r["scorer"])),
                        **{k: r[k] for k in ("n_scored", "n_failed", *ACCOUNTING_KEYS)},
                    }
                    for r in extra
                },
            }
            # Returned beside the score rows so the stage counts their calls and tokens; never stored as scores.
            rows += [dict(r, first_candidate=1) for r in extra]
        stored = [r for r in rows if "first_candidate" not in r]
        await self.off_loop(self._committed, "score", self.results.write_scores, stored, heldout)
        return rows, ("no other explained latent for a control" if no_control and self.cfg.score.control else None)

    def _score_row(
        self, latent, scorer, control, who, text, run: ScoredRun, model, backend, sha, seed, settings
    ) -> dict:
        m = classification_metrics(run.outcomes, self.sample_cfg.n_deciles)
        outcomes = [
            {
                "label": o.label,
                "decile": o.decile,
                "prediction": o.prediction,
                "probability": o.probability,
                "failed": o.failed,
                "window": it.window,
            }
            for o, it in zip(run.outcomes, run.items)
        ]
        return {
            "latent": latent,
            "explainer": self.explainer.name,
            "scorer": scorer,
            "control": control,
            "explanation_latent": who,
            "explanation": text,
            **m,
            "outcomes": outcomes,
            "errors": dict(run.errors),
            "n_retry": m["n_failed"] - run.permanent_failures,
            **run.accounting.as_row(),
            "model": model,
            "backend": backend,
            "correlation": run.details.get("correlation"),
            "details": run.details,
            "prompt_sha": sha,
            "seed": seed,
            "settings": settings,
            # each defined metric's 95% interval, from the stored outcomes (and, for simulation, stored predictions)
            "ci": score_intervals(
                run.outcomes,
                {**m, "correlation": run.details.get("correlation")},
                run.truth,
                run.details.get("predicted"),
            ),
        }

    # ---- stages over many latents -------------------------------------------------------------

    def latents_in_flight(self) -> int:
        # As many as the backend answers at once (a replica pool says how many it holds), and never fewer than two:
        # an in-process backend answers one latent's batch while the next one prepares.
        return 2 if self.backend is None else max(2, self.backend.parallel_latents)

    def begin_stage(self, latents: list[int], outage: Outage) -> None:
        """A stage over `latents` starts: controls are drawn from its selection, calls wait out its outage."""
        self._explained, self._selection = None, list(latents)
        self.llm.outage = outage

    async def run_stage(
        self,
        stage: str,
        latents: list[int],
        redo: bool = False,
        on_latent: Callable[[int, StageTally], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> StageTally:
        """Run one stage over `latents`. Calls that find no server are sent again after a pause (nothing is
        stored for their latent meanwhile); past `batch.outage_wait_s` of outage, or of calls waiting with no
        answer at all, the stage raises BackendUnavailable, keeping everything already stored. A stage whose
        calls all failed raises StageFailed after storing what it did (the failures, retried by the next run)."""
        return await _run_stage(self, stage, latents, redo, on_latent, on_event)
