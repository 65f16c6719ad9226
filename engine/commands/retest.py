"""`autointerp retest`: how much of a score is the latent and how much the draw of its examples.

The chosen latents are explained and scored again from K other draws (sampling seeds other than the original's),
through the same stages `autointerp explain` and `score` run (interpret.Interpreter, the batch's runner with its
checks, progress, run log and stop handling), with the explainer, scorers, sampling and LLM settings the database
recorded. Draw k's examples, explanations and scores go to the retest_* tables (results.Results(db, k)); the
originals (draw 0) are never touched. Every (draw, latent) unit commits on its own, so a killed retest rerun with
the same arguments finishes what is missing and ends as an uninterrupted one.

The report, per scorer (its primary metric, as the `scorers` table records it): the test-retest correlation of the
metric over latents between the original and each repeat (Pearson and Spearman, scipy.stats); ICC(1) over the
latents scored in every draw; the mean within-latent SD across draws beside the between-latent SD; and per latent
its values, min, max and SD. A unit with no value (its explanation failed, a score missing or undefined) is counted
per draw with its reason, never dropped silently.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import sys
import warnings
from dataclasses import dataclass

import click
import numpy as np

from autointerp.engine.config import Config, ConfigError, SampleConfig, config_from_dict
from autointerp.store.errors import UserError
from autointerp.store.stages import EXPLAIN, SCORE

from .wiring import user_errors

RETEST_STAGES = (EXPLAIN, SCORE)

# What the report's numbers mean, printed with it and carried in its JSON.
MEANING = {
    "pearson/spearman": "correlation over latents of the primary metric between the original draw (0) and one "
    "repeat; high: the ranking of latents survives a new draw of examples",
    "icc1": "ICC(1), one-way random effects over the latents scored in every draw: the share of one draw's score "
    "variance that is the latent rather than the draw (1: the draw does not matter, 0: the score is all draw; a "
    "negative estimate reads as 0)",
    "sd_within": "mean over latents of the SD of a latent's metric across draws (what a new draw moves a score by)",
    "sd_between": "SD over latents of each latent's mean metric across draws",
}


@dataclass
class Draw:
    draw: int
    seed: int
    cfg: Config

    def recorded(self) -> dict:
        """What retest_draws.config keeps: the settings the draw's results depended on."""
        c = self.cfg
        return {
            "sample": dataclasses.asdict(c.sample),
            "llm": dataclasses.asdict(c.llm),
            "explain": dataclasses.asdict(c.explain),
            "score": dataclasses.asdict(c.score),
        }


@dataclass
class Plan:
    db: str
    cfg: Config  # the recorded run's config (draw 0's settings), stages explain + score over `latents`
    explainer: str
    scorers: list[str]
    latents: list[int]
    draws: list[Draw]  # 1..K


# ---- what to run ------------------------------------------------------------------------------------------------


def plan_retest(db: str, spec: str | None, n_draws: int) -> Plan:
    """The retest's settings, latents and draws, read through a read-only connection: bad input is refused here in
    one line, before anything is written."""
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.scorers import SCORERS
    from autointerp.engine.interpretation.selection import parse_selection
    from autointerp.store.db import ActivationStore
    from autointerp.store.retest import draw_rows, latest_interpret_config, scored_with

    selection = parse_selection(spec if spec is not None else "live")
    with ActivationStore.open(db, readonly=True, allow_older=True) as store:
        conn = store.db.conn
        recorded = latest_interpret_config(conn)
        if not recorded:
            raise UserError(f"{db} holds no explanations to retest: run `autointerp explain` and `score` on it first")
        try:
            cfg = config_from_dict(_set_keys(recorded))
        except ConfigError as e:
            raise UserError(f"{db}: the recorded run's config cannot be read by this autointerp ({e})") from None
        cfg.db, cfg.cluster.ray_address = db, ""
        explainer = cfg.explain.explainer
        explained = store.results.explained_latents(explainer)
        if not explained:
            raise UserError(
                f"{db} holds no explanations by explainer {explainer!r} to retest: run `autointerp explain`"
            )
        scorers = [s for s in scored_with(conn, explainer) if s in SCORERS]
        if not scorers:
            raise UserError(f"{db} holds no scores of explainer {explainer!r} to retest: run `autointerp score` first")
        cfg.score.scorers = scorers
        # The sampling settings as the originals were drawn (the profile resolved), from their own record.
        original = store.results.sample_set(explained[0])
        if original is not None and original.config:
            known = {f.name for f in dataclasses.fields(SampleConfig)}
            cfg.sample = SampleConfig(**{k: v for k, v in original.config.items() if k in known})
        interp = Interpreter(cfg, store, None)
        try:
            mine = set(explained)
            live = [x for x in interp.live_latents() if x in mine]  # most frequent first, as `top:N` reads
            live += sorted(mine - set(live))
            latents, _ = selection.resolve_counted(live, interp.num_latents, cfg.sample.seed, interp.flagged(selection))
        finally:
            interp.close()
        latents = sorted(x for x in latents if x in mine)
        if not latents:
            raise UserError(
                f"latent selection {selection.text!r} names no latent with an explanation by {explainer!r} "
                f"({len(explained)} explained, e.g. {', '.join(map(str, explained[:5]))})"
            )
        existing = draw_rows(conn)
    draws = []
    for k in range(1, n_draws + 1):
        row = existing.get(k)
        if row is not None and row["explainer"] != explainer:
            raise UserError(
                f"{db}: retest draw {k} was made for explainer {row['explainer']!r}, the recorded run's is {explainer!r}"
            )
        seed = row["seed"] if row is not None else cfg.sample.seed + k  # never the original's seed
        draws.append(Draw(k, seed, draw_config(cfg, k, seed)))
    cfg.batch.stages, cfg.batch.latents = list(RETEST_STAGES), list(latents)
    return Plan(db, cfg, explainer, scorers, latents, draws)


def _set_keys(d: dict) -> dict:
    """A recorded config without its unset keys (None: "from the profile", as a config file leaves them out)."""
    return {k: _set_keys(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}


def draw_config(cfg: Config, k: int, seed: int) -> Config:
    """Draw k's config: the recorded one with its own sampling seed and LLM seed, and no random-explanation control
    (a repeat measures the real explanation's score; the control stays the original's)."""
    out = copy.deepcopy(cfg)
    out.sample.seed = seed
    out.llm.seed = cfg.llm.seed + k
    out.score.control = False
    return out


# ---- running the draws ------------------------------------------------------------------------------------------


def _runner_class():
    from .batch import BatchRunner

    class RetestRunner(BatchRunner):
        """The batch's runner over the explain and score stages, once per draw, each draw's Interpreter writing to
        that draw's retest tables."""

        def __init__(self, plan: Plan, console, argv):
            super().__init__(plan.cfg, console=console, argv=argv)
            self.plan = plan
            self.draw = 0  # the draw running

        def _clock(self, stage: str, unit: str, total: int):
            # Progress rows (the monitor's bars, the report's stage times) named by draw, never counted as the
            # original run's explain or score.
            return super()._clock(f"retest{self.draw}.{stage}", unit, total)

        def _interpret(self, store, backend, stages) -> None:
            self.run_log.set_latents(len(self.latents))
            asyncio.run(self._draws(store, backend, stages))

        async def _draws(self, store, backend, stages) -> None:
            from autointerp.engine.interpretation.interpret import Interpreter
            from autointerp.store.results import Results
            from autointerp.store.retest import draw_rows, finish_draw, start_draw, undone_latents

            plan, before, chosen = self.plan, None, self.latents
            try:
                for d in plan.draws:
                    start_draw(store.db.conn, d.draw, d.seed, plan.explainer, plan.scorers, d.recorded())
                    # Only the units still missing: a resumed retest never redoes (nor retries) a finished one.
                    todo = undone_latents(store.db.conn, d.draw, plan.explainer, plan.scorers, chosen)
                    self.console.print(
                        f"retest draw {d.draw} of {len(plan.draws)} (sampling seed {d.seed}): {len(todo)} of "
                        f"{len(chosen)} latents to explain and score",
                        markup=False,
                        highlight=False,
                    )
                    if todo:
                        interp = Interpreter(d.cfg, store, backend, Results(store.db, d.draw))
                        if before is not None:  # the models the previous draw loaded, not loaded again
                            interp.resources.share_loaded(before.resources)
                        self.latents, self.draw = todo, d.draw
                        try:
                            await self._stages(interp, None, stages)  # the backend is closed once, after every draw
                        finally:
                            interp.close()
                            self.latents = chosen
                        before = interp
                    if todo or draw_rows(store.db.conn)[d.draw]["done_at"] is None:
                        finish_draw(store.db.conn, d.draw)
            finally:
                if backend is not None:
                    await backend.aclose()

    return RetestRunner


def run_retest(plan: Plan, argv: list[str] | None = None) -> None:
    """Explain and score every draw's missing (draw, latent) units; progress on stderr."""
    from rich.console import Console

    _runner_class()(plan, Console(stderr=True), argv).run_stages()


# ---- the report -------------------------------------------------------------------------------------------------


def _num(x) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def _correlation(fn, a: list, b: list) -> tuple[float | None, float | None]:
    """(statistic, p-value), None where undefined (fewer than 3 pairs, or a constant side)."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fn(a, b)
    return _num(r.statistic), _num(r.pvalue)


def retest_stats(values: dict[int, list[float | None]]) -> dict:
    """The test-retest numbers of one scorer from {latent: [draw 0's metric, draw 1's, ...]} (None: no value)."""
    from scipy import stats

    n_draws = len(next(iter(values.values()))) if values else 0
    correlations = []
    for k in range(1, n_draws):
        pairs = [(v[0], v[k]) for v in values.values() if v[0] is not None and v[k] is not None]
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        pearson, pearson_p = _correlation(stats.pearsonr, a, b)
        spearman, spearman_p = _correlation(stats.spearmanr, a, b)
        correlations.append(
            {
                "draw": k,
                "n": len(pairs),
                "pearson": pearson,
                "pearson_p": pearson_p,
                "spearman": spearman,
                "spearman_p": spearman_p,
            }
        )
    complete = {latent: v for latent, v in values.items() if all(x is not None for x in v)}
    icc1 = sd_within = sd_between = None
    if n_draws >= 2 and len(complete) >= 2:
        groups = [np.asarray(v, dtype=float) for v in complete.values()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = float(stats.f_oneway(*groups).statistic)  # between-latent / within-latent mean square
        if np.isinf(f):
            icc1 = 1.0  # no latent's score moved between draws
        elif np.isfinite(f):
            icc1 = (f - 1) / (f + n_draws - 1)
        sd_within = float(np.mean([g.std(ddof=1) for g in groups]))
        sd_between = float(np.std([g.mean() for g in groups], ddof=1))
    per_latent = []
    for latent, v in sorted(values.items()):
        have = [x for x in v if x is not None]
        per_latent.append(
            {
                "latent": latent,
                "values": [_num(x) for x in v],
                "n": len(have),
                "min": _num(min(have)) if have else None,
                "max": _num(max(have)) if have else None,
                "sd": _num(np.std(have, ddof=1)) if len(have) >= 2 else None,
            }
        )
    return {
        "correlations": correlations,
        "icc1": _num(icc1),
        "n_complete": len(complete),
        "sd_within": _num(sd_within),
        "sd_between": _num(sd_between),
        "latents": per_latent,
    }


def retest_report(store, explainer: str, latents: list[int], draws: list[int]) -> dict:
    """The report over the stored draws (0 and `draws`) of `latents`, read from `store`."""
    from autointerp.store.retest import draw_explained, draw_metric, draw_rows, scored_with
    from autointerp.store.scorer_meta import primary_metrics

    conn = store.db.conn
    recorded = draw_rows(conn)
    all_draws = [0, *draws]
    scorers = scored_with(conn, explainer)
    metrics = primary_metrics(conn, scorers)
    out_scorers = {}
    for scorer in scorers:
        metric = metrics[scorer]
        values: dict[int, list[float | None]] = {x: [] for x in latents}
        missing = []
        for d in all_draws:
            got = draw_metric(conn, d, explainer, scorer, metric)
            explained = draw_explained(conn, d, explainer)
            reasons: dict[str, int] = {}
            failed_examples = 0
            for latent in latents:
                value, n_failed = got.get(latent, (None, 0))
                failed_examples += n_failed
                values[latent].append(value)
                if value is None:
                    if latent in got:
                        why = f"{metric} undefined"
                    elif explained.get(latent, "not explained") is not None:
                        why = f"no explanation ({explained.get(latent) or 'not explained'})"
                    else:
                        why = "not scored"
                    reasons[why] = reasons.get(why, 0) + 1
            missing.append(
                {"draw": d, "missing": sum(reasons.values()), "reasons": reasons, "failed_examples": failed_examples}
            )
        out_scorers[scorer] = {"metric": metric, **retest_stats(values), "failures": missing}
    return {
        "db": str(store.path),
        "explainer": explainer,
        "latents": list(latents),
        "draws": [
            {"draw": 0, "original": True}
            if d == 0
            else {"draw": d, "seed": recorded[d]["seed"], "done": recorded[d]["done_at"] is not None}
            for d in all_draws
            if d == 0 or d in recorded
        ],
        "scorers": out_scorers,
        "meaning": MEANING,
    }


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(report: dict) -> str:
    draws = report["draws"]
    seeds = ", ".join(str(d["seed"]) for d in draws if d["draw"])
    lines = [
        f"retest of {report['db']}: explainer {report['explainer']}, {len(report['latents'])} latents, the original "
        f"draw and {len(draws) - 1} repeats (sampling seeds {seeds})"
    ]
    for scorer, s in report["scorers"].items():
        lines.append(f"{scorer} ({s['metric']}):")
        for c in s["correlations"]:
            lines.append(
                f"  draw 0 vs {c['draw']}: pearson {_f(c['pearson'])}, spearman {_f(c['spearman'])} over {c['n']} latents"
            )
        lines.append(
            f"  ICC(1) {_f(s['icc1'])} over {s['n_complete']} latents scored in every draw; SD within latents "
            f"{_f(s['sd_within'])}, between latents {_f(s['sd_between'])}"
        )
        for m in s["failures"]:
            if m["missing"] or m["failed_examples"]:
                why = "; ".join(f"{n} {r}" for r, n in sorted(m["reasons"].items()))
                lines.append(
                    f"  draw {m['draw']}: {m['missing']} latents without a value"
                    + (f" ({why})" if why else "")
                    + f", {m['failed_examples']} failed examples"
                )
        header = "  latent " + " ".join(f"{'d' + str(d['draw']):>6}" for d in draws) + "    min    max     sd"
        lines.append(header)
        for row in s["latents"]:
            cells = " ".join(f"{_f(v):>6}" for v in row["values"])
            lines.append(f"  {row['latent']:>6} {cells} {_f(row['min']):>6} {_f(row['max']):>6} {_f(row['sd']):>6}")
    lines.append("meaning:")
    lines += [f"  {k}: {v}" for k, v in report["meaning"].items()]
    return "\n".join(lines)


# ---- the command ------------------------------------------------------------------------------------------------


@click.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option(
    "--latents",
    help="Which explained latents: 0-9,42 | random:N | top:N | live (default: every explained latent), then "
    "optionally ,-positional ,-unigram.",
)
@click.option(
    "--seeds",
    "n_seeds",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Repeat draws: K other sampling seeds, each explained and scored again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@user_errors
def retest(db, latents, n_seeds, as_json) -> None:
    """Explain and score latents again from K other draws of their examples (stored beside the originals, never
    replacing them), then report per scorer the test-retest correlation and each latent's spread: how much of a
    score is the latent and how much the draw. Resumable: rerun the same command after a crash."""
    from autointerp.store.db import ActivationStore, preflight

    preflight(db, must_exist=True, writing=True)
    plan = plan_retest(db, latents, n_seeds)
    run_retest(plan, argv=sys.argv)
    with ActivationStore.open(db, readonly=True) as store:
        report = retest_report(store, plan.explainer, plan.latents, [d.draw for d in plan.draws])
    click.echo(json.dumps(report, sort_keys=True) if as_json else format_report(report))
