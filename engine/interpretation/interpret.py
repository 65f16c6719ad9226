"""Explain and score latents over a store: the stage between the activation cache and the report.

Per latent: draw its examples (seeded, disjoint sets), explain from the explainer's set, then score the
explanation and a random-explanation control (another latent's explanation) on the held-out set with
each scorer. One latent's prompts go to the backend together and in prefix order (instructions and
explanation first, excerpts last), so the backend's prefix cache serves the shared part. Store and
sampling work runs on one worker thread, off the event loop, while the backend answers another latent.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from autointerp.store.db import ActivationStore
from autointerp.store.killpoints import kill_point
from autointerp.store.queries import ActivatingWindows, WindowQueries
from autointerp.store.results import SampleSet

from autointerp.engine.config import CacheConfig, Config, resolve_profile
from .examples import Example, TokenText, plain
from .explainers import EXPLAINERS, build_request, parse_explanation
from autointerp.engine.activations.lens import LogitLens
from .llm import LLMBackend, LLMRequest, LLMResponse
from autointerp.engine.interpretation.llm.base import stored_answer
from .metrics import ExampleOutcome, classification_metrics
from .prompts import PromptLibrary
from .sampling import ExampleSampler, NegativeSources
from .selection import Selection, parse_selection
from .scorers import generation, intervention, intruder
from autointerp.engine.interpretation.scorers.base import Accounting, Item, ScoredRun, label_requests, outcomes_from
from autointerp.engine.interpretation.scorers.detection import detection_items
from autointerp.engine.interpretation.scorers.embedding import embedding_run
from autointerp.engine.interpretation.scorers.fuzzing import fuzzing_items

# Each scorer's excerpt order is drawn from (seed, latent, this number): keyed by name, not by position in
# the configured list, so `--scorers detection` alone reproduces the default run's detection prompts.
# Detection, embedding and surprisal see the same plain excerpts.
SCORER_STREAM = {"detection": 1, "fuzzing": 2, "embedding": 1, "surprisal": 1, "simulation": 3, "intruder": 4,
                 "generation": 5, "intervention": 6}  # fmt: skip
INTERVENTION_STREAM = 0x57EE  # the draw of a latent's intervention prompt pool


COPIED_DEMONSTRATION = "copied a few-shot demonstration"  # an answer that parsed, and says nothing of this latent


class InterpretError(Exception):
    """A store or selection that explain/score cannot use, stated in one line."""


class BackendUnavailable(Exception):
    """Every call for a latent failed because the backend could not be reached: nothing was stored for it."""


class StageFailed(Exception):
    """A stage made LLM calls and not one of them gave a usable answer: it must not end as a success."""


class Outage:
    """Shared by a stage's latents: how long the backend has been unreachable, and the pause before a retry.

    The clock starts at the first call left unanswered (its send time), not when its retries give up; any answer
    ends the outage. Past `budget_s` of continuous outage the stage stops (a clean stop: what is stored stays,
    the next run resumes) instead of waiting forever. A lone transient failure among answers is retried quietly;
    an outage is announced (an event) once a retry after a pause has failed too."""

    def __init__(self, budget_s: float, on_event: Callable[[str, str], None] | None = None):
        self.budget_s, self.on_event = budget_s, on_event
        self.since: float | None = None
        self.attempt = 0
        self.announced = False

    def ok(self) -> None:
        if self.announced and self.on_event:
            self.on_event("resumed", "backend reachable again; resuming")
        self.since, self.attempt, self.announced = None, 0, False

    def give_up(self, why: str) -> BackendUnavailable:
        waited = asyncio.get_running_loop().time() - (self.since if self.since is not None else 0.0)
        return BackendUnavailable(f"the LLM backend was unavailable for {waited:.0f}s ({why})")

    async def pause(self, error: str, since: float) -> None:
        """Wait before sending again the calls that failed for a transient reason; raises past the budget."""
        loop = asyncio.get_running_loop()
        if self.since is None:
            self.since = since
        waited = loop.time() - self.since
        if waited >= self.budget_s:
            raise self.give_up(error)
        self.attempt += 1
        if self.attempt >= 2 and not self.announced and self.on_event:
            self.announced = True
            self.on_event("outage", f"backend unavailable ({error}); pausing and retrying "
                                    f"for up to {self.budget_s:.0f}s")  # fmt: skip
        await asyncio.sleep(min(0.5 * 2 ** min(self.attempt, 6), 30.0, self.budget_s - waited + 0.01))

    async def watch(self, backend: LLMBackend) -> None:
        """Stop the stage when calls have waited `budget_s` with no answer at all (a hanging server): without
        this, a hang would be noticed only after every call's timeout and retries (hours with the defaults)."""
        tick = min(1.0, max(self.budget_s / 8, 0.05))
        while True:
            await asyncio.sleep(tick)
            silent = backend.silent_s()
            if silent >= self.budget_s:
                raise BackendUnavailable(f"the LLM backend answered nothing for {silent:.0f}s "
                                         f"(calls waiting; outage_wait_s = {self.budget_s:g})")  # fmt: skip


def first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error inside (possibly nested) task groups, past the cancellations it caused."""
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            inner = first_error(e)
            if not isinstance(inner, asyncio.CancelledError):
                return inner
        elif not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]


def select_latents(cfg: Config, selection: Selection) -> list[int]:
    """The latents a selection names in a finished cache, read through a read-only connection (a command checking
    its inputs before it writes); a selection that names none is refused."""
    with ActivationStore.open(cfg.db, readonly=True, allow_older=True) as store:
        interp = Interpreter(cfg, store, None)
        try:
            latents = selection.resolve(interp.live_latents(), interp.num_latents, interp.sample_cfg.seed)
        finally:
            interp.close()
    if not latents:
        raise InterpretError(f"latent selection {selection.text!r} matches no live latent")
    return latents


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


class Interpreter:
    def __init__(self, cfg: Config, store: ActivationStore, backend: LLMBackend | None):
        prov = store.provenance
        if prov is None:
            raise InterpretError(f"{store.path} holds no activation cache yet: run `autointerp cache` first")
        self.store, self.backend = store, backend
        self.cache_cfg = CacheConfig(**json.loads(prov["config"]))
        if not store.stats_done(self.cache_cfg.window_len):
            raise InterpretError(f"{store.path}: the cache is not finished (its latent statistics are not complete); "
                                 "rerun the cache stage (`autointerp batch` or `autointerp cache`) to finish it")
        self.queries = WindowQueries(store, self.cache_cfg.window_len)
        self.results = store.results
        self.prompts = PromptLibrary(cfg.prompts_dir or None)
        self.spec = EXPLAINERS[cfg.explain.explainer]
        cpu_embedded = (
            backend is not None and backend.name == "llamacpp" and cfg.llm.model == "embedded"
            and getattr(backend, "n_gpu_layers", 0) == 0
        )  # fmt: skip
        self.cfg = cfg = resolve_profile(cfg, cpu_embedded)
        lm = cfg.score.surprisal_model
        if "surprisal" in cfg.score.scorers and lm not in ("subject", "embedded") and not Path(lm).expanduser().is_file():
            raise InterpretError(f"score.surprisal_model {lm!r}: use subject, embedded or the path of a .gguf file")
        self.sample_cfg = cfg.sample
        self.json_output = not (backend is not None and backend.name == "openai" and cfg.llm.structured_output == "none")
        # One thread owns the SQLite connection's work and the numpy sampling, off the event loop.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="autointerp-store")
        self.num_latents = int(prov["num_latents"])
        self._explained: np.ndarray | None = None  # latents with an explanation, for controls
        self._outage = Outage(cfg.batch.outage_wait_s)  # replaced by each run_stage with one that logs its events
        self._selection: list[int] = []  # the latents of the stage being run

    def close(self) -> None:
        self.worker.shutdown(wait=True)

    async def _off_loop(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    # ---- lazily loaded parts ------------------------------------------------------------------

    @cached_property
    def token_text(self) -> TokenText:
        from autointerp.engine.activations.model import load_tokenizer

        tok = load_tokenizer(self.cache_cfg.model)
        sep = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
        return TokenText(tok, int(self.store.provenance["bos_token_id"]), sep)

    @cached_property
    def subject(self):
        from autointerp.engine.activations.model import SubjectModel

        return SubjectModel.load(self.cache_cfg.model, "cpu", "float32")

    @cached_property
    def coder(self):
        from autointerp.engine.activations.setup import load_configured_coder

        return load_configured_coder(self.cache_cfg, self.subject)

    @cached_property
    def decoder(self):
        w = self.coder.decoder_directions()
        if w is None:
            raise InterpretError(f"coder {self.coder.kind} has no decoder directions (logit lens / neighbours need them)")
        return w

    @cached_property
    def probe(self):
        from autointerp.engine.activations.probe import LatentProbe

        return LatentProbe(self.subject, self.coder, self.store.provenance["hook"])

    @cached_property
    def base_lm(self):
        from .surprisal import SurprisalError, load_base_lm

        try:
            return load_base_lm(self.cfg.score.surprisal_model, lambda: self.subject)
        except SurprisalError as e:
            raise InterpretError(str(e)) from None

    @cached_property
    def embedder(self):
        from .embedding import Embedder

        return Embedder(self.cfg.score.embedding_model)

    @cached_property
    def logit_lens(self) -> LogitLens:
        return LogitLens.of_model(self.subject, self.decoder)

    @cached_property
    def sampler(self) -> ExampleSampler:
        from autointerp.engine.activations.neighbours import CoactivationIndex, DecoderNeighbours

        src = self.sample_cfg.non_activating_source
        sources = NegativeSources()
        if src == "neighbours":
            sources.neighbours = DecoderNeighbours(self.decoder)
        elif src == "coactivation":
            sources.coactivating = CoactivationIndex(self.queries, self.num_latents)
        elif src == "embedding":
            sources.by_embedding = self._rank_by_embedding
        return ExampleSampler(self.queries, self.sample_cfg, sources, explainer_negatives=self.spec.needs_negatives)

    def _rank_by_embedding(self, pool: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Non-activating candidates ordered by similarity to the centroid of the explainer's examples."""
        cand = self.examples(-1, pool)
        ref = self.examples(-1, reference)
        c = self.embedder.encode([plain(e) for e in cand])
        r = self.embedder.encode([plain(e) for e in ref]).mean(axis=0)
        return pool[np.argsort(-(c @ r), kind="stable")]

    # ---- selection ----------------------------------------------------------------------------

    def live_latents(self) -> list[int]:
        """Latents with enough activating windows to sample, most frequent first."""
        rows = self.store.db.execute(
            "select latent from latents where n_windows >= ? order by count desc, latent",
            [self.sample_cfg.min_windows],
        )
        return [r[0] for r in rows]

    def select(self, spec: str | list) -> list[int]:
        return parse_selection(spec).resolve(self.live_latents(), self.num_latents, self.sample_cfg.seed)

    # ---- examples -----------------------------------------------------------------------------

    def examples(self, latent: int, windows, deciles=None) -> list[Example]:
        """Windows -> Examples with this latent's activations (latent -1: windows only, no activations)."""
        windows = np.asarray(windows, dtype=np.int64)
        if latent >= 0:
            aw = self.queries.activating(latent)
        else:
            empty = np.zeros(0, np.int64)
            aw = ActivatingWindows(-1, empty, np.zeros(0, np.float32), empty, np.zeros(0, np.float32))
        lws = self.queries.fetch(aw, windows)
        deciles = deciles if deciles is not None else [0] * len(lws)
        return [Example(int(w.seq * self.queries.windows_per_seq + w.start // self.queries.window_len),
                        self.token_text(w.tokens), w.acts, int(d)) for w, d in zip(lws, deciles)]  # fmt: skip

    def role_examples(self, s: SampleSet, role: str) -> list[Example]:
        items = s.role(role)
        return self.examples(s.latent, [w for w, _, _ in items], [d for _, d, _ in items])

    def sample_set(self, latent: int, redo: bool = False) -> SampleSet:
        s = None if redo else self.results.sample_set(latent)
        if s is None:
            s = self.sampler.draw(latent)
            self.results.write_sample_set(s)
        return s

    # ---- steering (intervention scorer and explainer) -----------------------------------------

    def intervention_prompts(self, latent: int) -> dict[str, tuple[list[int], np.ndarray]]:
        """The latent's pool of corpus prompts (seeded by (seed, latent)), split into disjoint explainer and
        scorer sets: role -> (sequence ids, [n, prompt_tokens] token ids; each starts with the start token)."""
        sc = self.cfg.score
        n_seq = self.store.n_sequences()
        rng = np.random.default_rng([self.sample_cfg.seed, latent, INTERVENTION_STREAM])
        total = min(sc.intervention_explain_prompts + sc.intervention_prompts, n_seq)
        ids = [int(x) for x in rng.choice(n_seq, size=total, replace=False)]
        length = min(sc.intervention_prompt_tokens, self.queries.seq_len)
        seqs = self.store.sequences(ids)
        tokens = np.stack([seqs[i][:length].astype(np.int64) for i in ids]) if ids else np.zeros((0, length), np.int64)
        k = min(sc.intervention_explain_prompts, total // 2)  # the scorer keeps at least half
        return {"explain": (ids[:k], tokens[:k]), "score": (ids[k:], tokens[k:])}

    def steering_effects(self, latent: int, role: str, targets: list[float]) -> list[intervention.TargetEffects]:
        """Clean and steered continuations of the role's prompts at each KL target (runs the subject model)."""
        import torch

        from autointerp.engine.activations.model import ModelError
        from autointerp.engine.activations.steering import Steerer, SteeringError, steering_site

        ids, tokens = self.intervention_prompts(latent)[role]
        try:
            steerer = Steerer(self.subject, steering_site(self.coder, self.store.provenance["hook"], latent))
        except (SteeringError, ModelError) as e:  # counted failures of this latent, not a stopped stage
            return [intervention.TargetEffects(t, None, None, 0, str(e), len(ids)) for t in targets]
        return intervention.steer_prompts(steerer, torch.from_numpy(tokens), ids,
                                          lambda x: "".join(self.token_text(x)), targets,
                                          self.cfg.score.intervention_new_tokens)  # fmt: skip

    # ---- explain ------------------------------------------------------------------------------

    @cached_property
    def _demonstrated(self) -> set[str]:
        answers = (parse_explanation(a)[0] for a in self.prompts.get(self.spec.template).demonstrations())
        return {a.lower() for a in answers if a}

    def _prepare_explain(self, latent: int, redo: bool):
        explainer = self.spec.name
        if not redo:
            row = self.results.explanation(latent, explainer)
            if row is not None and row["text"] is not None:
                return None, "already explained"
        s = self.sample_set(latent, redo)
        if s.skipped:
            return None, s.skipped
        if self.spec.needs_steering:
            return self._prepare_explain_steered(latent, s), None
        examples = self.role_examples(s, "explain")
        negatives = self.role_examples(s, "explain_non") if self.spec.needs_negatives else None
        promoted = self.logit_lens.promoted(latent) if self.spec.needs_logit_lens else None
        stats = self.store.latent_stats(latent)
        req = build_request(
            self.spec, self.prompts, examples, threshold=self.cfg.explain.threshold, scale=float(stats["max_act"]),
            max_tokens=self.cfg.explain.max_tokens, seed=self.cfg.llm.seed, json_output=self.json_output,
            temperature=self.cfg.llm.temperature, promoted=promoted, negatives=negatives,
        )  # fmt: skip
        extras = {"promoted": promoted} if promoted else {}
        return (req, len(examples), extras, s.seed, None), None

    def _prepare_explain_steered(self, latent: int, s: SampleSet):
        """The output-side explainer: continuations clean and steered at the median KL target, no excerpts."""
        target = intervention.explain_target(self.cfg.score.kl_targets)
        (effects,) = self.steering_effects(latent, "explain", [target])
        extras = {"steering": effects.summary()}
        if effects.strength is None:
            return None, len(effects.pairs), extras, s.seed, effects.error
        messages = self.prompts.get(self.spec.template).render(examples=intervention.explain_examples(effects))
        req = LLMRequest(messages, max_tokens=self.cfg.explain.max_tokens, temperature=self.cfg.llm.temperature,
                         seed=self.cfg.llm.seed, json_schema=self.spec.schema if self.json_output else None)  # fmt: skip
        return req, len(effects.pairs), extras, s.seed, None

    async def explain_latent(self, latent: int, redo: bool = False) -> tuple[dict | None, str | None]:
        """Explain one latent; returns (the stored row, None) or (None, why it was skipped)."""
        prepared, skipped = await self._off_loop(self._prepare_explain, latent, redo)
        if prepared is None:
            return None, skipped
        req, n_examples, extras, seed, failed = prepared
        acc = Accounting()
        if failed is not None:  # nothing to ask (a steering target out of reach): a counted failure
            text, error, raw = None, failed, None
        else:
            (r,) = await self._complete([req])
            text, error = parse_explanation(r.text) if r.ok else (None, r.error)
            if text is not None and text.lower() in self._demonstrated:
                # Small models often repeat a few-shot answer word for word: that explains nothing here.
                text, error = None, COPIED_DEMONSTRATION
            acc.add(r)
            raw = stored_answer(r.text)
        row = {
            "latent": latent, "explainer": self.spec.name, "text": text, "error": error, "raw": raw,
            "model": self.backend.model, "backend": self.backend.name,
            "prompt_sha": self.prompts.get(self.spec.template).sha, "seed": seed, "n_examples": n_examples,
            "extras": extras, "settings": self._settings(threshold=self.cfg.explain.threshold), **acc.as_row(),
        }  # fmt: skip
        await self._off_loop(self.results.write_explanation, row)
        kill_point("explain")
        return row, None

    # ---- score --------------------------------------------------------------------------------

    def control_for(self, latent: int) -> tuple[int, str] | None:
        """Another latent's explanation from the same explainer, chosen by (seed, latent)."""
        if self._explained is None:  # read once per stage, not once per latent
            explained = self.results.explained_latents(self.spec.name)
            # Drawn from this stage's own selection where it has another explained latent: the choice then
            # does not depend on what other processes (on other latent ranges) have explained meanwhile.
            mine = sorted(set(explained) & set(self._selection))
            self._explained = np.array(mine if len(mine) >= 2 else explained, dtype=np.int64)
        others = self._explained[self._explained != latent]
        if not len(others):
            return None
        rng = np.random.default_rng([self.sample_cfg.seed, latent, 0xC0])
        other = int(rng.choice(others))
        return other, self.results.explanation(other, self.spec.name)["text"]

    def _prepare_score(self, latent: int, redo: bool):
        row = self.results.explanation(latent, self.spec.name)
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
            if redo or not self.results.score_done(latent, self.spec.name, scorer, c)
        ]
        if not todo:
            return None, "already scored"
        # (rows that exist but hold failed examples a rerun may fix are scored again, whole)
        act = self.role_examples(s, "activating")
        non = self.role_examples(s, "non_activating")
        state = {scorer: self._score_state(scorer, latent, s, act, non)
                 for scorer in dict.fromkeys(scorer for scorer, *_ in todo)}  # fmt: skip
        return (todo, state, s.seed, control is None), None

    def _score_state(self, scorer: str, latent: int, s: SampleSet, act: list[Example], non: list[Example]):
        """What a scorer needs besides the explanation, made once per latent (shared by the control)."""
        sc = self.cfg.score
        rng = np.random.default_rng([s.seed, latent, SCORER_STREAM[scorer]])
        if scorer == "fuzzing":
            return fuzzing_items(act, self.cfg.explain.threshold, sc.fuzz_incorrect_fraction, rng)
        if scorer in ("detection", "embedding", "surprisal"):
            return {"items": detection_items(act, non, rng), "cache": {}}
        if scorer == "simulation":
            # half activating (strongest first, spread over the deciles), half non-activating
            k = min(-(-sc.simulation_examples // 2), len(act))
            strong = sorted(act, key=lambda ex: -ex.max_act)
            picked = [strong[int(i)] for i in np.unique(np.linspace(0, len(strong) - 1, k).round())] if k else []
            return picked + non[: sc.simulation_examples - len(picked)]
        if scorer == "intruder":
            return intruder.intruder_groups(act, non, sc.intruder_group, rng)
        if scorer == "intervention":
            effects = self.steering_effects(latent, "score", sc.kl_targets)
            return (effects, *intervention.pair_items(effects, rng))
        return None  # generation: nothing but the explanation

    async def score_latent(self, latent: int, redo: bool = False) -> tuple[list[dict], str | None]:
        prepared, skipped = await self._off_loop(self._prepare_score, latent, redo)
        if prepared is None:
            return [], skipped
        todo, state, seed, no_control = prepared
        rows = []
        for scorer, control, who, text in todo:  # real then control, scorer by scorer: prefix order
            run, model, backend, sha, settings = await self._run_scorer(scorer, latent, text, state[scorer])
            rows.append(self._score_row(latent, scorer, control, who, text, run, model, backend, sha, seed, settings))
        await self._off_loop(self.results.write_scores, rows)
        kill_point("score")
        return rows, ("no other explained latent for a control" if no_control and self.cfg.score.control else None)

    async def _run_scorer(self, scorer: str, latent: int, text: str, state):
        """-> (run, model, backend, prompt sha, settings) for one explanation."""
        sc = self.cfg.score
        if scorer == "embedding":
            cache = state["cache"]
            if "vectors" not in cache:  # the excerpts' embeddings, computed once for the explanation and its control
                cache["vectors"] = await self._off_loop(self.embedder.encode, [it.text for it in state["items"]])
            run = await self._off_loop(embedding_run, self.embedder, text, state["items"], cache["vectors"])
            return run, self.embedder.name, "sentence-transformers", "", {"embedding_model": sc.embedding_model}
        if scorer == "surprisal":
            run = await self._off_loop(self._surprisal, text, state)
            return (run, self.base_lm.name, "base-lm", self.prompts.get("surprisal").sha,
                    {"surprisal_model": sc.surprisal_model})  # fmt: skip
        sha = self.prompts.get(scorer).sha
        if scorer in ("detection", "fuzzing"):
            items = state if scorer == "fuzzing" else state["items"]
            run = await self._llm_score(scorer, text, items)
            settings = self._settings(examples_per_prompt=sc.examples_per_prompt,
                                      fuzz_incorrect_fraction=sc.fuzz_incorrect_fraction)  # fmt: skip
        elif scorer == "simulation":
            run = await self._simulate(text, state)
            settings = self._settings(simulation_examples=sc.simulation_examples)
        elif scorer == "intruder":
            run = await self._intruder(text, state)
            settings = self._settings(intruder_group=sc.intruder_group)
        elif scorer == "generation":
            run = await self._generate(latent, text)
            settings = self._settings(generation_texts=sc.generation_texts)
        else:  # intervention
            run = await self._intervene(text, state)
            settings = self._settings(kl_targets=sc.kl_targets, intervention_prompts=sc.intervention_prompts,
                                      prompt_tokens=sc.intervention_prompt_tokens,
                                      new_tokens=sc.intervention_new_tokens)  # fmt: skip
        return run, self.backend.model, self.backend.name, sha, settings

    async def _complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """One response per request, none of them a transient failure: requests that found no server are sent
        again after the stage's outage pause (only those; the others' answers are kept), until answered or the
        outage outlasts its budget (BackendUnavailable: nothing of this latent is stored)."""
        responses = list(await self.backend.complete_many(requests))
        fresh = responses
        while True:
            if any(not r.unavailable for r in fresh):
                self._outage.ok()  # a server answered: whatever failed beside it is no outage (yet)
            waiting = [i for i, r in enumerate(responses) if r.unavailable]
            if not waiting:
                return responses
            first = responses[waiting[0]]
            await self._outage.pause(first.error or "unavailable", asyncio.get_running_loop().time() - first.latency_s)
            fresh = await self.backend.complete_many([requests[i] for i in waiting])
            for i, r in zip(waiting, fresh):
                responses[i] = r

    async def _llm_score(self, scorer: str, explanation: str, items: list[Item]) -> ScoredRun:
        batches = label_requests(
            self.prompts.get(scorer), explanation, items, self.cfg.score.examples_per_prompt, seed=self.cfg.llm.seed,
            top_logprobs=self.cfg.llm.top_logprobs, json_output=self.json_output, temperature=self.cfg.llm.temperature,
        )  # fmt: skip
        return outcomes_from(batches, await self._complete([req for req, _ in batches]))

    def _surprisal(self, explanation: str, state: dict) -> ScoredRun:
        from .surprisal import surprisal_run

        prefix = self.prompts.get("surprisal").render(explanation=explanation)[-1]["content"] + "\n"
        run, state["cache"]["baseline"] = surprisal_run(self.base_lm, prefix, state["items"],
                                                        state["cache"].get("baseline"))  # fmt: skip
        run.details = {"base_model": self.base_lm.name}
        return run

    async def _simulate(self, explanation: str, examples: list[Example]) -> ScoredRun:
        from autointerp.engine.interpretation.scorers.simulation import parse_simulation, simulation_correlations, simulation_request

        template, llm = self.prompts.get("simulation"), self.cfg.llm
        reqs = [simulation_request(template, explanation, ex.tokens, seed=llm.seed, top_logprobs=llm.top_logprobs,
                                   json_output=self.json_output, temperature=llm.temperature)
                for ex in examples]  # fmt: skip
        responses = await self._complete(reqs)
        run, predicted, n_expected = ScoredRun([], []), [], 0
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
            run.outcomes.append(ExampleOutcome(int(ex.decile > 0), ex.decile, int(values.max() > 0), float(sim.max()) / 10))
        run.details = simulation_correlations([ex.acts for ex in examples], predicted)
        # tokens whose prediction is an expected value over the digit logprobs (the rest: the answer's integer)
        run.details["n_expected_values"] = n_expected
        return run

    async def _intruder(self, explanation: str, groups) -> ScoredRun:
        template, llm = self.prompts.get("intruder"), self.cfg.llm
        reqs = [intruder.intruder_request(template, explanation, items, seed=llm.seed, top_logprobs=llm.top_logprobs,
                                          json_output=self.json_output, temperature=llm.temperature)
                for items, _ in groups]  # fmt: skip
        run = ScoredRun([], [])
        for (items, answer), r in zip(groups, await self._complete(reqs)):
            run.accounting.add(r)
            run.items.append(items[answer])
            chosen, probs, error = intruder.parse_intruder(r, len(items))
            if error is not None:
                run.errors[error] += 1
                run.outcomes.append(ExampleOutcome(1, 0, failed=True))
            else:
                run.outcomes.append(ExampleOutcome(1, 0, int(chosen == answer), probs[answer] if probs else None))
        run.details = {"group": self.cfg.score.intruder_group + 1, "chance": 1 / (self.cfg.score.intruder_group + 1)}
        return run

    async def _generate(self, latent: int, explanation: str) -> ScoredRun:
        n, llm = self.cfg.score.generation_texts, self.cfg.llm
        req = generation.generation_request(self.prompts.get("generation"), explanation, n, seed=llm.seed,
                                            json_output=self.json_output, temperature=llm.temperature)  # fmt: skip
        (r,) = await self._complete([req])
        texts, error = generation.parse_texts(r, n)
        acts = await self._off_loop(self.probe.activations, texts, latent) if texts else []
        run = generation.generation_run(texts, error, n, acts)
        run.accounting.add(r)
        run.details = {"texts": [{"text": stored_answer(t), "max_act": None if a is None else float(a.max(initial=0.0))}
                                 for t, a in zip(texts or [], acts)]}  # fmt: skip
        return run

    async def _intervene(self, explanation: str, state) -> ScoredRun:
        effects, items, identical = state
        template, llm = self.prompts.get("intervention"), self.cfg.llm
        reqs = [intervention.intervention_request(template, explanation, it, seed=llm.seed,
                                                  top_logprobs=llm.top_logprobs, json_output=self.json_output,
                                                  temperature=llm.temperature)
                for it in items]  # fmt: skip
        responses = await self._complete(reqs) if reqs else []
        return intervention.intervention_run(effects, items, identical, responses, self.sample_cfg.n_deciles)

    def _score_row(self, latent, scorer, control, who, text, run: ScoredRun, model, backend, sha, seed,
                   settings) -> dict:  # fmt: skip
        m = classification_metrics(run.outcomes, self.sample_cfg.n_deciles)
        outcomes = [
            {"label": o.label, "decile": o.decile, "prediction": o.prediction, "probability": o.probability,
             "failed": o.failed, "window": it.window}
            for o, it in zip(run.outcomes, run.items)
        ]  # fmt: skip
        return {
            "latent": latent, "explainer": self.spec.name, "scorer": scorer, "control": control,
            "explanation_latent": who, "explanation": text, **m, "outcomes": outcomes,
            "errors": dict(run.errors), "n_retry": m["n_failed"] - run.permanent_failures,
            **run.accounting.as_row(), "model": model, "backend": backend,
            "correlation": run.details.get("correlation"), "details": run.details,
            "prompt_sha": sha, "seed": seed, "settings": settings,
        }  # fmt: skip

    def _settings(self, **more) -> dict:
        """What an answer depended on besides the prompt and the examples (recorded with every row)."""
        llm = self.cfg.llm
        return {"llm_seed": llm.seed, "temperature": llm.temperature, "top_logprobs": llm.top_logprobs,
                "json_output": self.json_output, "profile": self.cfg.profile,
                **(self.backend.describe() if self.backend else {}), **more}  # fmt: skip

    # ---- stages over many latents -------------------------------------------------------------

    def latents_in_flight(self) -> int:
        # In-process backends answer one batch at a time: a second latent prepares meanwhile.
        # Over HTTP, many latents keep a server (or a fleet) busy.
        return 2 if self.backend is None or self.backend.name != "openai" else max(2, self.cfg.llm.max_concurrency)

    async def run_stage(self, stage: str, latents: list[int], redo: bool = False,
                        on_latent: Callable[[int, StageTally], None] | None = None,
                        on_event: Callable[[str, str], None] | None = None) -> StageTally:  # fmt: skip
        """Run one stage over `latents`. Calls that find no server are sent again after a pause (nothing is
        stored for their latent meanwhile); past `batch.outage_wait_s` of outage, or of calls waiting with no
        answer at all, the stage raises BackendUnavailable, keeping everything already stored. A stage whose
        calls all failed raises StageFailed after storing what it did (the failures, retried by the next run)."""
        tally = StageTally()
        self._explained, self._selection = None, list(latents)
        gate = asyncio.Semaphore(self.latents_in_flight())

        def log(kind: str, message: str, data: dict | None = None) -> None:
            if on_event is not None:  # a caller with its own event log (the batch's RunLog)
                on_event(kind, message)
            else:  # on the store's own thread, in order with the results
                self.worker.submit(self.store.log_event, stage, kind, message, data)

        self._outage = Outage(self.cfg.batch.outage_wait_s, log)

        async def one(latent: int) -> None:
            async with gate:
                if stage == "explain":
                    row, why = await self.explain_latent(latent, redo)
                    rows = [row] if row else []
                else:
                    rows, why = await self.score_latent(latent, redo)
                if rows:
                    tally.done += 1
                else:
                    tally.skipped += 1
                for r in rows:
                    tally.add_accounting(r)
                    if stage == "explain":
                        tally.failed += r["text"] is None
                        tally.answered += r["text"] is not None or r["error"] == COPIED_DEMONSTRATION
                        if r["text"] is None:
                            tally.errors[r["error"]] += 1
                    else:
                        tally.failed += r["n_failed"]
                        tally.answered += r["n_scored"] if r["n_calls"] else 0
                        tally.errors.update(r["errors"])
                if why:
                    tally.reasons[why] += 1
                if on_latent:
                    on_latent(latent, tally)

        async def all_latents() -> None:
            async with asyncio.TaskGroup() as group:  # the first error cancels the other latents
                for x in latents:
                    group.create_task(one(x))

        log("start", f"{stage}: {len(latents)} latents", {"latents": len(latents)})
        try:
            async with asyncio.TaskGroup() as outer:
                dog = outer.create_task(self._outage.watch(self.backend)) if self.backend is not None else None
                await all_latents()
                if dog is not None:
                    dog.cancel()
        except BaseExceptionGroup as eg:
            error = first_error(eg)
            if isinstance(error, BackendUnavailable):
                log("stopped", f"{stage}: {error}")
            raise error from None
        finally:
            await self._off_loop(lambda: None)  # the events queued on the store's thread are written
        reasons = "; ".join(f"{n} {why}" for why, n in tally.reasons.most_common())
        log("end", f"{stage}: {tally.done} done, {tally.skipped} skipped, {tally.failed} failed"
                   + (f" ({reasons})" if reasons else ""),
            {"done": tally.done, "skipped": tally.skipped, "failed": tally.failed})  # fmt: skip
        await self._off_loop(lambda: None)
        if tally.all_failed:
            raise StageFailed(f"every LLM call of the {stage} stage failed ({tally.failure_summary()}); what failed "
                              "is stored and retried by the next run: check the LLM server, then rerun")  # fmt: skip
        return tally
