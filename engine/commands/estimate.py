"""`autointerp batch --dry-run`: what a run would do and what it would cost, before anything runs.

LLM calls are counted exactly, per latent, from what decides them: each latent's number of activating windows
(the cache's statistics) gives the sizes of its example sets (`sampling.sample_sizes`, kept in step with the
sampler), or its stored sample set does; which explanations and scores are already stored (a score holding
failed examples a rerun may fix counts as to do); and whether a control explanation will exist. Two things no
plan can know are stated, not guessed: the counts assume every explanation succeeds (a failed one is not scored),
and intervention scoring's count is an upper bound (a steering target out of reach, or a steered continuation
identical to the clean one, asks nothing). Before the cache exists the latents are not known yet: the counts
are then upper bounds from the nominal sample sizes.

Prompt tokens come from rows already in the database when there are any (measured per call), else from the
prompt files rendered without excerpts (4 characters per token) plus one window of tokens per excerpt: a rough
figure, labelled as such.
"""

from __future__ import annotations

from autointerp.engine.activations.cache import cache_is_complete
from autointerp.engine.config import Config, resolve_profile
from autointerp.engine.interpretation.explainers import EXPLAINERS
from autointerp.engine.interpretation.llm import backend_class
from autointerp.engine.interpretation.prompts import PromptLibrary
from autointerp.engine.interpretation.sampling import CONTRASTIVE_NEGATIVES, sample_sizes
from autointerp.engine.interpretation.scorers import SCORERS
from autointerp.engine.interpretation.scorers.protocol import template_tokens as _template_tokens
from autointerp.engine.interpretation.selection import parse_selection
from autointerp.store import plan_reads as reads
from autointerp.store.db import ActivationStore, preflight
from autointerp.store.text import printable


def _embedded_on_cpu(cfg: Config) -> bool:
    return cfg.llm.model == "embedded" and backend_class(cfg.llm.backend).runs_on_cpu(cfg.llm)


def scorer_calls(cfg: Config, scorer: str, n_act: int, n_non: int) -> int:
    """LLM calls one explanation costs a scorer, for a latent with these held-out example counts (as the
    scorers build their prompts: each scorer's `calls`). Intervention: an upper bound."""
    return SCORERS[scorer].calls(cfg, n_act, n_non)


def _rough_tokens_per_call(cfg: Config, prompts: PromptLibrary, scorer: str) -> tuple[int, int]:
    """(prompt tokens, output token budget) of one call, from the prompt file and the excerpt sizes."""
    return SCORERS[scorer].rough_tokens(cfg, prompts)


def plan(cfg: Config) -> dict:
    """The run's plan as a dict: stages, latents to do, LLM calls and prompt tokens per stage. Reads only."""
    cfg = resolve_profile(cfg, _embedded_on_cpu(cfg))
    selection = parse_selection(cfg.batch.latents)
    out: dict = {
        "db": cfg.db,
        "profile": cfg.profile,
        "stages": list(cfg.batch.stages),
        "llm": f"{cfg.llm.backend} ({cfg.llm.model})",
        "selection": selection.text,
    }
    exists = preflight(cfg.db, must_exist=False, writing=False) not in (None, 0)
    store = ActivationStore.open(cfg.db, readonly=True) if exists else None  # writes nothing
    try:
        complete = store is not None and cache_is_complete(store, cfg.cache)
        out["cache"] = {
            "tokens": cfg.cache.n_sequences * cfg.cache.seq_len,
            "complete": complete,
            "chunks_committed": len(store.chunks()) if store is not None and store.provenance else 0,
        }
        explainer = EXPLAINERS[cfg.explain.explainer]
        if complete and store is not None:
            work = _work_from_cache(cfg, store, selection, explainer.draws_negatives(cfg))
            measured = _measured(store, cfg)
        else:
            if store is not None and store.provenance is not None:
                selection.check_width(int(store.provenance["num_latents"]))
            work = _work_before_cache(cfg, selection)
            measured = {}
        out["latents"] = work["latents"]
        # Per exclusion (,-positional / ,-unigram): how many of the latents the selection draws from it left out;
        # None before the cache (the cache stage computes the filters).
        out["excluded"] = work.get("excluded", {name: None for name in selection.exclude})
        prompts = PromptLibrary(cfg.prompts_dir or None)
        stages = {}
        if "explain" in cfg.batch.stages:
            rough = _template_tokens(prompts, explainer.template, examples="", promoted="", negatives="")
            rough += explainer.shown_tokens(cfg)
            n_draws = cfg.explain.candidates
            stages["explain"] = _stage(
                work["explain"],
                None if work["explain"] is None else work["explain"] * n_draws,
                measured.get("explain") if n_draws == 1 else None,
                rough,
                explainer.max_tokens(cfg),
                work["exact"] and explainer.calls_exact,
            )
            if n_draws > 1 and SCORERS[cfg.explain.candidate_scorer].needs.llm:
                # Best-of-N: each draw scored on the explainer's examples and explainer-side negatives (an upper
                # bound: a text drawn twice is scored once, and a latent with few windows shows fewer examples).
                pick = cfg.explain.candidate_scorer
                per = n_draws * scorer_calls(cfg, pick, cfg.sample.n_explain, CONTRASTIVE_NEGATIVES)
                rough_pick, budget = _rough_tokens_per_call(cfg, prompts, pick)
                stages[f"explain/pick:{pick}"] = _stage(
                    work["explain"],
                    None if work["explain"] is None else work["explain"] * per,
                    None,
                    rough_pick,
                    budget,
                    False,
                )
        if "score" in cfg.batch.stages:
            for scorer in cfg.score.scorers:
                todo, calls = work["score"][scorer]
                if not SCORERS[scorer].needs.llm:
                    stages[f"score/{scorer}"] = _stage(todo, 0, None, 0, 0, True)
                    continue
                rough, budget = _rough_tokens_per_call(cfg, prompts, scorer)
                stages[f"score/{scorer}"] = _stage(
                    todo,
                    calls,
                    measured.get(f"score/{scorer}"),
                    rough,
                    budget,
                    work["exact"] and SCORERS[scorer].calls_exact,
                )
        out["llm_stages"] = stages
        out["total"] = {
            k: sum(st[k] for st in stages.values() if st[k] is not None)
            for k in ("calls", "prompt_tokens", "max_output_tokens")
        }
        out["total"]["exact"] = all(st["exact"] for st in stages.values() if st["calls"])
        return out
    finally:
        if store is not None:
            store.close()


def _work_before_cache(cfg: Config, selection) -> dict:
    """No cache yet: the nominal sample sizes for as many latents as the selection names (None for "live")."""
    n = selection.count()
    sizes = {
        "activating": cfg.sample.activating_per_decile * cfg.sample.n_deciles,
        "non_activating": cfg.sample.n_non_activating,
    }
    sides = 2 if cfg.score.control and (n or 0) > 1 else 1
    score = {}
    for scorer in cfg.score.scorers:
        per = scorer_calls(cfg, scorer, sizes["activating"], sizes["non_activating"])
        score[scorer] = (n, None if n is None else n * sides * per)
    return {"latents": n, "explain": n, "score": score, "exact": False}


PLAN_BLOCK = 20_000  # latents planned per block of queries: memory follows the block, not the coder's width


def _work_from_cache(cfg: Config, store: ActivationStore, selection, explainer_negatives: bool) -> dict:
    """Exact counts from the finished cache and what is stored, in blocks of latents (two passes: the first counts
    which latents will have an explanation, which decides whether controls exist; the second counts the calls)."""
    from autointerp.engine.interpretation.interpret import Interpreter

    interp = Interpreter(cfg, store, None)
    try:
        latents, excluded = interp.resolve_counted(selection)
        total_windows = interp.queries.n_windows()
    finally:
        interp.close()
    explainer, conn = cfg.explain.explainer, store.db.conn

    def blocks():
        """Per block of selected latents: {latent: its example-set sizes or None (skipped)}, and the explained."""
        for start in range(0, len(latents), PLAN_BLOCK):
            part = latents[start : start + PLAN_BLOCK]
            span = [part[0], part[-1]]
            n_windows = reads.window_counts(conn, span)
            stored = reads.stored_sample_sizes(conn, span)
            skipped = reads.skipped_latents(conn, span)
            explained = reads.explained_latents(conn, explainer, span)
            sizes = {
                x: None
                if x in skipped
                else stored.get(x) or sample_sizes(cfg.sample, n_windows.get(x, 0), total_windows, explainer_negatives)
                for x in part
            }
            yield part, span, sizes, explained

    # Pass 1: which selected latents will have an explanation (assuming every explanation succeeds).
    to_explain = mine = 0
    for part, _, sizes, explained in blocks():
        to_explain += sum(1 for x in part if sizes[x] is not None and x not in explained)
        mine += sum(1 for x in part if x in explained or sizes[x] is not None)
    n_explained = reads.explained_count(conn, explainer)
    # As Interpreter.control_for draws a control: from this selection's explained latents when it has two, else from
    # every explained latent; a scored latent has a control when that pool holds another latent than itself.
    pool = mine if mine >= 2 else n_explained + to_explain
    sides = [0, 1] if cfg.score.control and pool >= 2 else [0]
    # Pass 2: the calls still to make.
    score = {scorer: [0, 0] for scorer in cfg.score.scorers}
    for part, span, sizes, _explained in blocks():
        done = reads.finished_scores(conn, explainer, span)
        for x in part:
            sz = sizes[x]
            if sz is None:
                continue
            for scorer, tally in score.items():
                todo = sum(1 for c in sides if (x, scorer, c) not in done)
                if todo:
                    tally[0] += 1
                    tally[1] += todo * scorer_calls(cfg, scorer, sz.get("activating", 0), sz.get("non_activating", 0))
    return {
        "latents": len(latents),
        "excluded": excluded,
        "explain": to_explain,
        "score": {k: tuple(v) for k, v in score.items()},
        "exact": True,
    }


def _stage(todo, calls, measured, rough_per_call, max_output_per_call, exact: bool) -> dict:
    if todo is None:
        return {
            "latents": None,
            "calls": None,
            "prompt_tokens": None,
            "max_output_tokens": None,
            "basis": "-",
            "exact": False,
        }
    if measured and measured["calls"]:
        per_call = measured["prompt_tokens"] / measured["calls"]
        basis = f"tokens measured on {measured['calls']:,} calls"
    else:
        per_call, basis = rough_per_call, "tokens rough: prompt files at 4 chars/token + excerpts"
    return {
        "latents": todo,
        "calls": calls,
        "prompt_tokens": int(calls * per_call),
        "max_output_tokens": int(calls * max_output_per_call),
        "basis": basis if calls else "no LLM",
        "exact": exact,
    }


def _measured(store: ActivationStore, cfg: Config) -> dict:
    """LLM use per call so far (rows that made a call), by stage: what measured token counts come from."""
    from .report.summary import sum_accounting

    conn, explainer = store.db.conn, cfg.explain.explainer
    out = {"explain": sum_accounting(conn, explainer, called_only=True)}
    for scorer in cfg.score.scorers:
        out[f"score/{scorer}"] = sum_accounting(conn, explainer, scorer, called_only=True)
    return out


def format_plan(p: dict) -> str:
    c = p["cache"]
    lines = [f"plan for {printable(p['db'])} (profile {p['profile']}, LLM {printable(p['llm'])})"]
    if "cache" in p["stages"]:
        state = "already complete" if c["complete"] else f"{c['chunks_committed']} chunks committed so far"
        lines.append(f"  cache    {c['tokens']:,} tokens ({state})")
    n = p["latents"]
    lines.append(
        f"  latents  {printable(p['selection'])} -> "
        f"{n if n is not None else 'every live latent (known after the cache)'}"
    )
    for name, n_out in p.get("excluded", {}).items():
        lines.append(
            f"  skipped  {n_out:,} {name} latents (-{name})"
            if n_out is not None
            else f"  skipped  {name} latents (-{name}): known once the cache and its filters are computed"
        )
    for stage, st in p["llm_stages"].items():
        if st["latents"] is None:
            lines.append(f"  {stage:20s} latents known after the cache")
            continue
        calls = f"{st['calls']:,} LLM calls" if st["exact"] else f"at most {st['calls']:,} LLM calls"
        lines.append(
            f"  {stage:20s} {st['latents']:,} latents to do, {calls}, "
            f"~{st['prompt_tokens']:,} prompt tokens ({st['basis']})"
        )
    t = p["total"]
    lines.append(
        f"  total                {t['calls']:,} LLM calls{'' if t['exact'] else ' at most'}, "
        f"~{t['prompt_tokens']:,} prompt tokens, at most {t['max_output_tokens']:,} output tokens"
    )
    if c["complete"]:
        lines.append(
            "  (exact if every explanation succeeds: a failed explanation is not scored; intervention "
            "calls are an upper bound: an unreachable target or identical continuations ask nothing)"
        )
    else:
        lines.append(
            "  (before the cache: upper bounds from the nominal sample sizes; run the dry run again once "
            "the cache is complete for exact counts)"
        )
    return "\n".join(lines)
