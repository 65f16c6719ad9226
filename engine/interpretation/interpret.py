"""Explain and score latents over a store: the stage between the activation cache and the report.

Per latent: draw its examples (seeded, disjoint sets), explain from the explainer's set, then score the
explanation and a random-explanation control (another latent's explanation) on the held-out set with
each scorer. One latent's prompts go to the backend together and in prefix order (instructions and
explanation first, excerpts last), so the backend's prefix cache serves the shared part. Store and
sampling work runs on one worker thread, off the event loop, while the backend answers another latent.

This module is one latent's work. Beside it: stage.py runs a stage over many latents (tally.py counts it,
outage.py waits out an unreachable backend, errors.py names its faults; all importable from here as before), and
each scorer is one object in scorers/ (the SCORERS registry), seeing this Interpreter through scorer_context.py.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Callable

import numpy as np

from autointerp.engine.activations.lens import LogitLens
from autointerp.engine.config import CacheConfig, Config, resolve_profile
from autointerp.engine.interpretation.llm.base import stored_answer
from autointerp.engine.interpretation.scorers.base import Accounting, ScoredRun
from autointerp.store.db import ActivationStore
from autointerp.store.killpoints import kill_point
from autointerp.store.queries import ActivatingWindows, WindowQueries
from autointerp.store.results import SampleSet

from . import best_of
from .errors import BackendUnavailable, InterpretError, StageFailed  # noqa: F401
from .examples import Example, TokenText, plain
from .explainers import EXPLAINERS, build_request, parse_explanation
from .llm import LLMBackend, LLMRequest, LLMResponse
from .metrics import classification_metrics
from .outage import Outage, complete_answered
from .prompts import PromptLibrary
from .sampling import ExampleSampler, NegativeSources
from .scorer_context import InterpreterContext
from .scorers import SCORERS, intervention, primary_metric
from .selection import Selection, parse_selection
from .stage import first_error  # noqa: F401
from .stage import run_stage as _run_stage
from .tally import COPIED_DEMONSTRATION, StageTally

ACCOUNTING_KEYS = tuple(vars(Accounting()))  # n_calls, tokens, seconds: what every row accounts
INTERVENTION_STREAM = 0x57EE  # the draw of a latent's intervention prompt pool


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
    def __init__(self, cfg: Config, store: ActivationStore, backend: LLMBackend | None):
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
        self.results = store.results
        self.prompts = PromptLibrary(cfg.prompts_dir or None)
        self.spec = EXPLAINERS[cfg.explain.explainer]
        cpu_embedded = (
            backend is not None
            and backend.name == "llamacpp"
            and cfg.llm.model == "embedded"
            and getattr(backend, "n_gpu_layers", 0) == 0
        )
        self.cfg = cfg = resolve_profile(cfg, cpu_embedded)
        for name in cfg.score.scorers:  # a setting that cannot work is refused before any latent
            problem = SCORERS[name].check(cfg) if name in SCORERS else None
            if problem:
                raise InterpretError(problem)
        self.sample_cfg = cfg.sample
        self.json_output = not (
            backend is not None and backend.name == "openai" and cfg.llm.structured_output == "none"
        )
        # One thread owns the SQLite connection's work and the numpy sampling, off the event loop.
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="autointerp-store")
        self.num_latents = int(prov["num_latents"])
        self._explained: np.ndarray | None = None  # latents with an explanation, for controls
        self._outage = Outage(cfg.batch.outage_wait_s)  # replaced by each run_stage with one that logs its events
        self._selection: list[int] = []  # the latents of the stage being run
        self.context = InterpreterContext(self)  # what the scorers see of this

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
            raise InterpretError(
                f"coder {self.coder.kind} has no decoder directions (logit lens / neighbours need them)"
            )
        return w

    @cached_property
    def probe(self):
        from autointerp.engine.activations.probe import LatentProbe

        prov = self.store.provenance
        return LatentProbe(self.subject, self.coder, prov["hook"], via_bridge=prov.get("forward") == "bridge")

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
        return LogitLens.of_model(self.subject, self.decoder, hook=str(self.store.provenance["hook"]))

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
        # Best-of-N picks among candidates on explainer-side negatives too, drawn apart from the held-out ones.
        negatives = self.spec.needs_negatives or self.cfg.explain.candidates > 1
        return ExampleSampler(self.queries, self.sample_cfg, sources, explainer_negatives=negatives)

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
        windows = np.asarray(windows, dtype=np.int64)
        if latent >= 0:
            aw = self.queries.activating(latent)
        else:
            empty = np.zeros(0, np.int64)
            aw = ActivatingWindows(-1, empty, np.zeros(0, np.float32), empty, np.zeros(0, np.float32))
        lws = self.queries.fetch(aw, windows)
        deciles = deciles if deciles is not None else [0] * len(lws)
        return [
            Example(
                int(w.seq * self.queries.windows_per_seq + w.start // self.queries.window_len),
                self.token_text(w.tokens),
                w.acts,
                int(d),
            )
            for w, d in zip(lws, deciles)
        ]

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
        return intervention.steer_prompts(
            steerer,
            torch.from_numpy(tokens),
            ids,
            lambda x: "".join(self.token_text(x)),
            targets,
            self.cfg.score.intervention_new_tokens,
        )

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
            self.spec,
            self.prompts,
            examples,
            threshold=self.cfg.explain.threshold,
            scale=float(stats["max_act"]),
            max_tokens=self.cfg.explain.max_tokens,
            seed=self.cfg.llm.seed,
            json_output=self.json_output,
            temperature=self.cfg.llm.temperature,
            promoted=promoted,
            negatives=negatives,
        )
        extras = {"promoted": promoted} if promoted else {}
        pick = self._pick_state(latent, s, examples) if self.cfg.explain.candidates > 1 else None
        return (req, len(examples), extras, s.seed, None, pick), None

    def _pick_state(self, latent: int, s: SampleSet, examples: list[Example]):
        """Best-of-N: the candidate scorer's items from the explainer's examples and explainer-side negatives only
        (None when the sample set has no such negatives: it was drawn before candidates were asked for)."""
        negatives = self.role_examples(s, "explain_non")
        if not negatives:
            return None
        scorer = SCORERS[self.cfg.explain.candidate_scorer]
        rng = np.random.default_rng([s.seed, latent, scorer.stream, best_of.PICK_STREAM])
        return scorer.prepare(self.context, latent, s, examples, negatives, rng)

    def _prepare_explain_steered(self, latent: int, s: SampleSet):
        """The output-side explainer: continuations clean and steered at the median KL target, no excerpts."""
        target = intervention.explain_target(self.cfg.score.kl_targets)
        (effects,) = self.steering_effects(latent, "explain", [target])
        extras = {"steering": effects.summary()}
        if effects.strength is None:
            return None, len(effects.pairs), extras, s.seed, effects.error, None
        messages = self.prompts.get(self.spec.template).render(examples=intervention.explain_examples(effects))
        req = LLMRequest(
            messages,
            max_tokens=self.cfg.explain.max_tokens,
            temperature=self.cfg.llm.temperature,
            seed=self.cfg.llm.seed,
            json_schema=self.spec.schema if self.json_output else None,
        )
        return req, len(effects.pairs), extras, s.seed, None, None

    async def explain_latent(self, latent: int, redo: bool = False) -> tuple[dict | None, str | None]:
        """Explain one latent; returns (the stored row, None) or (None, why it was skipped)."""
        prepared, skipped = await self._off_loop(self._prepare_explain, latent, redo)
        if prepared is None:
            return None, skipped
        req, n_examples, extras, seed, failed, pick = prepared
        acc = Accounting()
        candidates = None
        if failed is not None:  # nothing to ask (a steering target out of reach): a counted failure
            text, error, raw = None, failed, None
        elif self.cfg.explain.candidates > 1:
            text, error, raw, candidates, acc, extras = await self._best_of(latent, req, pick, extras)
        else:
            (r,) = await self._complete([req])
            text, error = parse_explanation(r.text) if r.ok else (None, r.error)
            if text is not None and text.lower() in self._demonstrated:
                # Small models often repeat a few-shot answer word for word: that explains nothing here.
                text, error = None, COPIED_DEMONSTRATION
            acc.add(r)
            raw = stored_answer(r.text)
        row = {
            "latent": latent,
            "explainer": self.spec.name,
            "text": text,
            "error": error,
            "raw": raw,
            "model": self.backend.model,
            "backend": self.backend.name,
            "prompt_sha": self.prompts.get(self.spec.template).sha,
            "seed": seed,
            "n_examples": n_examples,
            "extras": extras,
            "settings": self._settings(threshold=self.cfg.explain.threshold, **self._best_of_settings()),
            **acc.as_row(),
        }
        await self._off_loop(self.results.write_explanation, row, candidates)
        kill_point("explain")
        return row, None

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
        responses = await self._complete(best_of.candidate_requests(req, ex.candidates, ex.candidate_temperature, seed))
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
                "explainer": self.spec.name,
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
            explained = self.results.explained_latents(self.spec.name)
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
        candidates = self.results.candidates(latent, self.spec.name)
        if len(candidates) < 2 or candidates[0]["chosen"] or candidates[0]["text"] is None:
            return None
        missing = [sc for sc in self.cfg.score.scorers if redo or sc not in candidates[0]["heldout"]]
        return (candidates[0]["text"], missing) if missing else None

    def _score_state(self, scorer: str, latent: int, s: SampleSet, act: list[Example], non: list[Example]):
        """What a scorer needs besides the explanation, made once per latent (shared by the control)."""
        rng = np.random.default_rng([s.seed, latent, SCORERS[scorer].stream])
        return SCORERS[scorer].prepare(self.context, latent, s, act, non, rng)

    async def score_latent(self, latent: int, redo: bool = False) -> tuple[list[dict], str | None]:
        prepared, skipped = await self._off_loop(self._prepare_score, latent, redo)
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
                "explainer": self.spec.name,
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
        await self._off_loop(self.results.write_scores, [r for r in rows if "first_candidate" not in r], heldout)
        kill_point("score")
        return rows, ("no other explained latent for a control" if no_control and self.cfg.score.control else None)

    async def _complete(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        """One response per request; calls that found no server are retried through the stage's outage pause."""
        assert self.backend is not None, "LLM calls need a backend"
        return await complete_answered(self.backend, self._outage, requests)

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
            "explainer": self.spec.name,
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
        }

    def _settings(self, **more) -> dict:
        """What an answer depended on besides the prompt and the examples (recorded with every row)."""
        llm = self.cfg.llm
        return {
            "llm_seed": llm.seed,
            "temperature": llm.temperature,
            "top_logprobs": llm.top_logprobs,
            "json_output": self.json_output,
            "profile": self.cfg.profile,
            **(self.backend.describe() if self.backend else {}),
            **more,
        }

    # ---- stages over many latents -------------------------------------------------------------

    def latents_in_flight(self) -> int:
        # In-process backends answer one batch at a time: a second latent prepares meanwhile.
        # Over HTTP, many latents keep a server (or a fleet) busy; a replica pool says how many it holds.
        pool = getattr(self.backend, "parallel_latents", 0)
        if pool:
            return max(2, pool)
        return 2 if self.backend is None or self.backend.name != "openai" else max(2, self.cfg.llm.max_concurrency)

    def begin_stage(self, latents: list[int], outage: Outage) -> None:
        """A stage over `latents` starts: controls are drawn from its selection, calls wait out its outage."""
        self._explained, self._selection = None, list(latents)
        self._outage = outage

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
