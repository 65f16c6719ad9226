"""Score summaries: each scorer's metrics over latents, the random-explanation control beside them."""

from __future__ import annotations

from rich.text import Text

from autointerp.engine.interpretation.metrics import METRIC_NAMES, summarise, summarise_columns
from autointerp.store import report_reads as reads
from autointerp.store.audits import rater_report
from autointerp.store.filters import filter_counts
from autointerp.store.results import Results
from autointerp.store.scorer_meta import METRICS, primary_metrics
from autointerp.store.text import printable

from .best_of import best_of_report, print_best_of


def score_summary(results: Results, explainer: str, latents: list[int] | None = None) -> dict:
    """{scorer: {"real": summary, "control": summary, "primary_metric": name}} over the given latents (default:
    all scored)."""
    conn = results.db.conn
    names = (*METRIC_NAMES, "n_failed", "n")
    out: dict = {}
    scorers = reads.scorer_names(conn, explainer, latents)
    metrics = primary_metrics(conn, scorers)  # as each scorer recorded it (store/scorer_meta.py)
    for scorer in scorers:
        out[scorer] = {}
        for side, c in (("real", 0), ("control", 1)):
            columns, n = reads.metric_columns(conn, explainer, scorer, c, names, latents)
            out[scorer][side] = summarise_columns(columns, n)
            del columns
        out[scorer]["primary_metric"] = metrics[scorer]
        out[scorer]["intervals"] = interval_summary(conn, explainer, scorer, metrics[scorer], latents)
        if scorer == "intervention":  # the same metrics per KL target, from each row's details
            out[scorer]["per_target"] = per_target_summary(reads.score_details(conn, explainer, scorer, latents))
    return out


def interval_summary(conn, explainer: str, scorer: str, metric: str, latents: list[int] | None = None) -> dict | None:
    """Error bars of the scorer's primary metric (scores.ci, engine/interpretation/intervals.py): per side the mean
    metric and mean 95% half-width over the rows that have an interval, and how many latents' intervals overlap their
    random-explanation control's (an explanation its control cannot be told from). None where no row has one."""
    if metric not in METRICS:
        return None
    out: dict = {"metric": metric}
    for side, c in (("real", 0), ("control", 1)):
        mean, half, n = reads.interval_widths(conn, explainer, scorer, c, metric, latents)
        out[side] = {"mean": mean, "half_width": half, "n": n}
    if not out["real"]["n"] and not out["control"]["n"]:
        return None
    out["latents"], out["overlap_control"] = reads.interval_overlaps(conn, explainer, scorer, metric, latents)
    return out


def interval_table(summary: dict):
    """A rich Table of each scorer's error bars (None when no scorer has intervals: rows scored before schema 13 and
    not upgraded)."""
    from rich.table import Table

    rows = {scorer: s["intervals"] for scorer, s in summary.items() if s.get("intervals")}
    if not rows:
        return None
    table = Table(title="95% intervals of each latent's primary metric (mean ± mean half-width)")
    for col in ("scorer", "metric", "explanation", "random control", "overlap the control"):
        table.add_column(col)
    for scorer, iv in rows.items():
        table.add_row(
            Text(printable(scorer)),
            iv["metric"],
            _interval_cell(iv["real"]),
            _interval_cell(iv["control"]),
            f"{iv['overlap_control']} of {iv['latents']}" if iv["latents"] else "-",
        )
    return table


def _interval_cell(side: dict) -> str:
    if not side["n"] or side["mean"] is None:
        return "-"
    return f"{side['mean']:.3f} ± {side['half_width']:.3f} (n={side['n']})"


def per_target_summary(rows: list[dict]) -> dict:
    """{target: {"real"|"control": summary}} over intervention rows, plus how often the target was reached."""
    out: dict = {}
    for r in rows:
        for t in (r.get("details") or {}).get("per_target", []):
            side = out.setdefault(str(t["target"]), {"real": [], "control": []})["control" if r["control"] else "real"]
            side.append(t)
    names = ("accuracy", "balanced_accuracy", "auroc")
    return {
        target: {
            side: {**summarise(ts, names), "unreached": sum(t.get("strength") is None for t in ts)}
            for side, ts in sides.items()
        }
        for target, sides in sorted(out.items(), key=lambda kv: float(kv[0]))
    }


def _cell(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    sem = f" ± {s['sem']:.2f}" if s["sem"] is not None else ""
    return f"{s['mean']:.3f}{sem} (n={s['n']})"


def summary_table(summary: dict):
    """A rich Table: one row per scorer and metric; real explanations, then the control."""
    from rich.table import Table

    table = Table(title="scores over latents (mean ± s.e.m.)")
    for col in ("scorer", "metric", "explanation", "random control"):
        table.add_column(col)
    for scorer, sides in summary.items():
        label = Text(printable(scorer))  # on the first row shown (the embedding scorer has only AUROC)
        for name in METRIC_NAMES:
            real, control = sides["real"][name], sides["control"][name]
            if real["mean"] is None and control["mean"] is None:
                continue
            table.add_row(label, name, _cell(real), _cell(control))
            label = Text("")
        for target, ts in sides.get("per_target", {}).items():
            for name in ("balanced_accuracy", "auroc"):
                real, control = ts["real"][name], ts["control"][name]
                if real["mean"] is not None or control["mean"] is not None:
                    table.add_row("", Text(f"KL {printable(target)}: {name}"), _cell(real), _cell(control))
            if ts["real"]["unreached"]:
                table.add_row(
                    "",
                    Text(f"KL {printable(target)}: not reached"),
                    str(ts["real"]["unreached"]),
                    str(ts["control"]["unreached"]),
                )
        table.add_row(
            "", "failed examples", str(sides["real"]["n_failed"]), str(sides["control"]["n_failed"]), end_section=True
        )
    return table


def sum_accounting(conn, explainer: str, scorer: str | None = None, latents=None, *, called_only=False) -> dict:
    """LLM use of the explanations (scorer None) or one scorer's scores (store/report_reads.py `llm_accounting`),
    with prompt and output tokens per latent."""
    out = reads.llm_accounting(conn, explainer, scorer, latents, called_only=called_only)
    n = max(out["latents"], 1)
    out["prompt_tokens_per_latent"] = out["prompt_tokens"] / n
    out["output_tokens_per_latent"] = out["output_tokens"] / n
    return out


def batch_report(
    store,
    explainer: str,
    latents: list[int] | None = None,
    usd_per_m_prompt: float = 0.0,
    usd_per_m_output: float = 0.0,
) -> dict:
    """Everything `autointerp report` shows, as one JSON-able dict: per-scorer metrics with the control,
    failures by reason, tokens per stage (and per scorer), price per million latents, time per stage."""
    conn = store.db.conn
    failures = reads.explanation_failures(conn, explainer, latents)
    n_expl, n_ok = reads.explanation_counts(conn, explainer, latents)
    tokens = {"explain": sum_accounting(conn, explainer, latents=latents)}
    score_errors: dict[str, dict[str, int]] = {}
    for scorer in reads.scorer_names(conn, explainer):
        tokens[f"score/{scorer}"] = sum_accounting(conn, explainer, scorer, latents)
        score_errors[scorer] = reads.score_error_counts(conn, explainer, scorer, latents)
    per_latent_prompt = sum(t["prompt_tokens_per_latent"] for t in tokens.values())
    per_latent_output = sum(t["output_tokens_per_latent"] for t in tokens.values())
    price = None
    if usd_per_m_prompt or usd_per_m_output:
        # $/Mtok x tokens per latent / 1e6 tokens x 1e6 latents: the factors of a million cancel.
        price = per_latent_prompt * usd_per_m_prompt + per_latent_output * usd_per_m_output
    times = reads.stage_times(conn)
    out: dict = {
        "explainer": explainer,
        "latents": len(latents) if latents is not None else None,
        "explanations": {"total": n_expl, "ok": n_ok, "failed": n_expl - n_ok, "failures": failures},
        "scores": score_summary(store.results, explainer, latents),
        "score_failures": score_errors,
        "tokens": tokens,
        "tokens_per_latent": {"prompt": per_latent_prompt, "output": per_latent_output},
        "usd_per_million_latents": price,
        "price_basis": {
            "usd_per_million_prompt_tokens": usd_per_m_prompt,
            "usd_per_million_output_tokens": usd_per_m_output,
        },
        "time": times,
        # Latents the cache's filters flag (None: never computed): positional, unigram candidates, how many of them
        # were verified through the model, and how many were confirmed unigram latents.
        "filters": filter_counts(store),
    }
    # Human ratings (audit mode): who rated how many, agreement between raters and with each scorer. Over every
    # rating whatever `latents` says (ratings are few, and agreement needs all of them); absent when nobody rated.
    metrics = {scorer: v["primary_metric"] for scorer, v in out["scores"].items() if v["primary_metric"] in METRICS}
    raters = rater_report(conn, explainer, metrics)
    if raters is not None:
        out["raters"] = raters
    # Best-of-N (explain.candidates > 1): the held-out gain of the kept explanation over the first draw; absent
    # when no latent had candidates.
    best_of = best_of_report(conn, explainer, metrics)
    if best_of is not None:
        out["best_of"] = best_of
    return out


def print_report(report: dict, console) -> None:
    from rich.table import Table

    e = report["explanations"]
    # Failure reasons quote servers and models: printed literally (no markup, control characters spelled out).
    console.print(
        f"explanations ({printable(report['explainer'])}): {e['ok']} usable, {e['failed']} failed",
        highlight=False,
        markup=False,
    )
    for why, n in e["failures"].items():
        console.print(f"  {n} failed: {printable(why)}", highlight=False, markup=False)
    f = report.get("filters") or {}
    if f.get("positional") is not None:
        verified = f["unigram_verified"]
        console.print(
            f"filters: {f['positional']:,} positional latents; {f['unigram_candidates']:,} unigram candidates, "
            f"{verified:,} verified through the model, {f['unigram']:,} unigram latents "
            "(leave them out with --latents live,-positional,-unigram)",
            highlight=False,
            markup=False,
        )
    if report["scores"]:
        console.print(summary_table(report["scores"]))
        intervals = interval_table(report["scores"])
        if intervals is not None:
            console.print(intervals)
    for scorer, errs in report["score_failures"].items():
        for why, n in sorted(errs.items(), key=lambda kv: -kv[1]):
            console.print(
                f"  {printable(scorer)}: {n} examples failed: {printable(why)}", highlight=False, markup=False
            )
    if report.get("raters"):
        print_raters(report["raters"], console)
    if report.get("best_of"):
        print_best_of(report["best_of"], console)
    table = Table(title="LLM use per stage")
    for col in (
        "stage",
        "latents",
        "calls",
        "failed calls",
        "prompt tokens",
        "from cache",
        "output tokens",
        "prompt tok/latent",
        "output tok/latent",
        "backend s",
    ):
        table.add_column(col, justify="right" if col != "stage" else "left", no_wrap=col == "stage")
    for stage, t in report["tokens"].items():
        table.add_row(
            Text(printable(stage)),
            f"{t['latents']:,}",
            f"{t['calls']:,}",
            f"{t['failed_calls']:,}",
            f"{t['prompt_tokens']:,}",
            f"{t['cached_tokens']:,}",
            f"{t['output_tokens']:,}",
            f"{t['prompt_tokens_per_latent']:,.0f}",
            f"{t['output_tokens_per_latent']:,.0f}",
            f"{t['backend_s']:,.1f}",
        )
    console.print(table)
    if report["usd_per_million_latents"] is not None:
        b = report["price_basis"]
        console.print(
            f"estimated price: ${report['usd_per_million_latents']:,.0f} per million latents at "
            f"${b['usd_per_million_prompt_tokens']}/M prompt and ${b['usd_per_million_output_tokens']}/M "
            "output tokens",
            highlight=False,
        )
    if report["time"]:
        console.print(
            "time per stage (wall, summed over runs): "
            + ", ".join(
                f"{printable(stage)} {t['wall_s']:,.1f}s ({t['runs']} run{'s' if t['runs'] != 1 else ''})"
                for stage, t in report["time"].items()
            ),
            highlight=False,
            markup=False,
        )


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _rho(row: dict | None) -> str:
    return "-" if row is None else f"{_num(row['spearman'])} (n={row['n']})"


def print_raters(raters: dict, console) -> None:
    """The raters section: who rated how many, agreement between raters (unweighted Cohen's kappa per pair,
    Krippendorff's alpha at the ordinal level over all), and Spearman's rho with each scorer per rater and pooled."""
    from rich.table import Table

    counts = ", ".join(f"{printable(r['rater'])} {r['rated']}" for r in raters["raters"])
    console.print(f"raters: {counts} ({raters['latents_rated']} latents rated)", highlight=False, markup=False)
    if raters["pairs"]:
        console.print(
            f"  Krippendorff's alpha (ordinal) {_num(raters['alpha'])} over {raters['alpha_n']} latents rated by"
            " two or more",
            highlight=False,
            markup=False,
        )
        for p in raters["pairs"]:
            console.print(
                f"  {printable(p['a'])} - {printable(p['b'])}: Cohen's kappa (unweighted) {_num(p['kappa'])},"
                f" rated alike {_num(p['agree'])}, n {p['n']}",
                highlight=False,
                markup=False,
            )
    if not raters.get("scorers"):
        return
    names = [r["rater"] for r in raters["raters"]]
    table = Table(title="ratings vs scorers (Spearman's rho; n latents rated and scored)")
    for col in ("scorer", "metric", "pooled", *names):
        table.add_column(Text(printable(col)))
    for scorer, v in raters["scorers"].items():
        table.add_row(
            Text(printable(scorer)),
            v["metric"],
            _rho(v["pooled"]),
            *(_rho(v["by_rater"].get(name)) for name in names),
        )
    console.print(table)
