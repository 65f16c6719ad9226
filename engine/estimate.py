"""`autointerp batch --dry-run`: what a run would do and roughly what it would cost, before anything runs.

Calls are counted exactly from the sampling sizes. Prompt tokens come from rows already in the database
when there are any (measured per latent), else from the prompt files rendered without excerpts (4
characters per token) plus one window of tokens per excerpt: a rough figure, labelled as such.
"""

from __future__ import annotations

import math
from pathlib import Path

from autointerp.store.db import ActivationStore

from .annotate import needs_annotation
from .batch import cache_is_complete, selection_text
from .config import Config, resolve_profile
from .explainers import EXPLAINERS
from .interpret import parse_selection
from .prompts import PromptLibrary
from .scorers import WITHOUT_LLM


def _embedded_on_cpu(cfg: Config) -> bool:
    if cfg.llm.backend != "llamacpp" or cfg.llm.model != "embedded":
        return False
    try:
        import llama_cpp

        return not llama_cpp.llama_supports_gpu_offload()
    except ImportError:
        return True


def _template_tokens(prompts: PromptLibrary, name: str, **values) -> int:
    messages = prompts.get(name).render(**values)
    return sum(len(m["content"]) for m in messages) // 4


def _scorer_calls(cfg: Config, prompts: PromptLibrary, scorer: str, n_act: int) -> tuple[int, int, int]:
    """Per latent and explanation: (LLM calls, rough prompt tokens per call, output token budget per call)."""
    s, sc, w = cfg.sample, cfg.score, cfg.cache.window_len
    expl = "x" * 60
    if scorer in ("detection", "fuzzing"):
        per = sc.examples_per_prompt
        items = n_act if scorer == "fuzzing" else n_act + s.n_non_activating
        base = _template_tokens(prompts, scorer, explanation=expl, examples="", n=str(per))
        return math.ceil(items / per), base + per * (w + 4), 8 + 4 * per
    if scorer == "simulation":
        base = _template_tokens(prompts, scorer, explanation=expl, tokens="", n=str(w))
        return sc.simulation_examples, base + 4 * w, 4 * w + 16
    if scorer == "intruder":
        groups = min(n_act // sc.intruder_group, s.n_non_activating)
        base = _template_tokens(prompts, scorer, explanation=expl, examples="", n="")
        return groups, base + (sc.intruder_group + 1) * (w + 4), 16
    if scorer == "generation":
        return 1, _template_tokens(prompts, scorer, explanation=expl, n=""), 24 + 60 * sc.generation_texts
    # intervention: one call per prompt and KL target (pairs with identical continuations are skipped)
    base = _template_tokens(prompts, scorer, explanation=expl, prompt="", a="", b="")
    return (len(sc.kl_targets) * sc.intervention_prompts,
            base + sc.intervention_prompt_tokens + 2 * sc.intervention_new_tokens, 16)  # fmt: skip


def _count_selection(spec) -> int | None:
    """How many latents a selection names before the cache exists (None: every live latent, unknown yet)."""
    if isinstance(spec, list):
        return len(set(spec))
    kind, _, arg = spec.partition(":")
    if kind in ("random", "top") and arg.isdigit():
        return int(arg)
    if spec == "live":
        return None
    return len(parse_selection(spec, [], 1 << 31, 0))  # ranges: checked and counted by the one parser


def plan(cfg: Config) -> dict:
    """The run's plan as a dict: stages, latents to do, LLM calls and prompt tokens per stage."""
    cfg = resolve_profile(cfg, _embedded_on_cpu(cfg))
    s, sc = cfg.sample, cfg.score
    out: dict = {"db": cfg.db, "profile": cfg.profile, "stages": list(cfg.batch.stages),
                 "llm": f"{cfg.llm.backend} ({cfg.llm.model})", "selection": selection_text(cfg.batch.latents)}  # fmt: skip
    store = ActivationStore.open(cfg.db, readonly=True) if Path(cfg.db).exists() else None  # writes nothing
    try:
        cached = store is not None and store.provenance is not None and store.db["latents"].count > 0
        complete = store is not None and cache_is_complete(store, cfg)
        out["cache"] = {"tokens": cfg.cache.n_sequences * cfg.cache.seq_len, "complete": complete,
                        "chunks_committed": len(store.chunks()) if store is not None and store.provenance else 0,
                        # complete but without vocabulary / directions: the batch loads the model to add them
                        "annotate": complete and needs_annotation(store)}  # fmt: skip
        latents, explain_todo, score_todo = None, None, None
        if cached:
            from .interpret import Interpreter

            interp = Interpreter(cfg, store, None)
            try:
                latents = interp.select(selection_text(cfg.batch.latents))
            finally:
                interp.close()
            res = store.results
            explainer = cfg.explain.explainer
            explain_todo = sum(1 for x in latents if (r := res.explanation(x, explainer)) is None or r["text"] is None)
            score_todo = {
                scorer: sum(1 for x in latents if not res.has_score(x, explainer, scorer, 0)) for scorer in sc.scorers
            }
        n = len(latents) if latents is not None else _count_selection(cfg.batch.latents)
        out["latents"] = n
        measured = _measured(store, cfg) if store is not None else {}
        prompts = PromptLibrary(cfg.prompts_dir or None)
        explainer_spec = EXPLAINERS[cfg.explain.explainer]
        n_act = s.activating_per_decile * s.n_deciles
        sides = 2 if sc.control else 1
        stages = {}
        if "explain" in cfg.batch.stages:
            todo = explain_todo if explain_todo is not None else n
            shown = (sc.intervention_explain_prompts * (sc.intervention_prompt_tokens + 2 * sc.intervention_new_tokens + 8)
                     if explainer_spec.needs_steering else s.n_explain * (cfg.cache.window_len + 2))  # fmt: skip
            rough = _template_tokens(prompts, explainer_spec.template, examples="", promoted="", negatives="") + shown
            stages["explain"] = _stage(todo, 1, measured.get("explain"), rough,
                                       cfg.explain.max_tokens * explainer_spec.token_budget)  # fmt: skip
        if "score" in cfg.batch.stages:
            for scorer in sc.scorers:
                todo = score_todo[scorer] if score_todo is not None else n
                if scorer in WITHOUT_LLM:
                    stages[f"score/{scorer}"] = _stage(todo, 0, None, 0, 0)
                    continue
                calls, rough_call, out_call = _scorer_calls(cfg, prompts, scorer, n_act)
                stages[f"score/{scorer}"] = _stage(todo, sides * calls, measured.get(f"score/{scorer}"),
                                                   rough_call * sides * calls, out_call * sides * calls)  # fmt: skip
        out["llm_stages"] = stages
        out["total"] = {k: sum(st[k] for st in stages.values() if st[k] is not None)
                        for k in ("calls", "prompt_tokens", "max_output_tokens")}  # fmt: skip
        return out
    finally:
        if store is not None:
            store.close()


def _stage(todo, calls_per_latent, measured, rough_prompt_per_latent, max_output_per_latent) -> dict:
    if todo is None:
        return {"latents": None, "calls": None, "prompt_tokens": None, "max_output_tokens": None, "basis": "-"}
    if measured and measured["latents"]:
        per_latent = measured["prompt_tokens"] / measured["latents"]
        basis = f"measured on {measured['latents']} latents"
    else:
        per_latent, basis = rough_prompt_per_latent, "rough: prompt files at 4 chars/token + excerpts"
    return {"latents": todo, "calls": todo * calls_per_latent, "prompt_tokens": int(todo * per_latent),
            "max_output_tokens": int(todo * max_output_per_latent), "basis": basis if calls_per_latent else "no LLM"}  # fmt: skip


def _measured(store: ActivationStore, cfg: Config) -> dict:
    if store.provenance is None:
        return {}
    from .report import sum_accounting

    out = {"explain": sum_accounting(store.db, "explanations", "explainer = ? and n_calls > 0", [cfg.explain.explainer])}
    for scorer in cfg.score.scorers:
        out[f"score/{scorer}"] = sum_accounting(store.db, "scores", "explainer = ? and scorer = ? and n_calls > 0",
                                                 [cfg.explain.explainer, scorer])  # fmt: skip
    return out


def format_plan(p: dict) -> str:
    c = p["cache"]
    lines = [f"plan for {p['db']} (profile {p['profile']}, LLM {p['llm']})"]
    if "cache" in p["stages"]:
        state = "already complete" if c["complete"] else f"{c['chunks_committed']} chunks committed so far"
        if c.get("annotate"):
            state += "; the model is loaded to store its vocabulary, logit lens and decoder neighbours"
        lines.append(f"  cache    {c['tokens']:,} tokens ({state})")
    n = p["latents"]
    lines.append(f"  latents  {p['selection']} -> {n if n is not None else 'every live latent (known after the cache)'}")
    for stage, st in p["llm_stages"].items():
        if st["latents"] is None:
            lines.append(f"  {stage:14s} latents known after the cache")
            continue
        lines.append(f"  {stage:14s} {st['latents']:,} latents to do, {st['calls']:,} LLM calls, "
                     f"~{st['prompt_tokens']:,} prompt tokens ({st['basis']})")  # fmt: skip
    t = p["total"]
    lines.append(f"  total    {t['calls']:,} LLM calls, ~{t['prompt_tokens']:,} prompt tokens, "
                 f"at most {t['max_output_tokens']:,} output tokens")  # fmt: skip
    return "\n".join(lines)
