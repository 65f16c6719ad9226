"""Score summaries: each scorer's metrics over latents, the random-explanation control beside them."""

from __future__ import annotations

from autointerp.store.results import Results

from .metrics import METRIC_NAMES, summarise


def score_summary(results: Results, explainer: str, latents: list[int] | None = None) -> dict:
    """{scorer: {"real": summary, "control": summary}} over the given latents (default: all scored)."""
    rows = results.scores(explainer=explainer)
    if latents is not None:
        keep = set(latents)
        rows = [r for r in rows if r["latent"] in keep]
    out: dict = {}
    for scorer in sorted({r["scorer"] for r in rows}):
        out[scorer] = {
            side: summarise([r for r in rows if r["scorer"] == scorer and r["control"] == c])
            for side, c in (("real", 0), ("control", 1))
        }
    return out


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
        label = scorer  # on the first row shown (the embedding scorer has only AUROC)
        for name in METRIC_NAMES:
            real, control = sides["real"][name], sides["control"][name]
            if real["mean"] is None and control["mean"] is None:
                continue
            table.add_row(label, name, _cell(real), _cell(control))
            label = ""
        table.add_row("", "failed examples", str(sides["real"]["n_failed"]), str(sides["control"]["n_failed"]),
                      end_section=True)  # fmt: skip
    return table
