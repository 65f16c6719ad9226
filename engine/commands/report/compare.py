"""`autointerp compare A.db B.db`: two runs' scores side by side (the paper's SAE latents vs neurons comparison).

Per scorer both runs hold: each run's distribution of the scorer's primary metric over latents, beside its
random-explanation control; the difference of means (B - A) with a bootstrap confidence interval; a rank test;
and the control's difference, so a reader sees whether the gap is above what a random explanation gets.
Both files are opened read-only; values are read as numpy columns, never a dict per latent.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from autointerp.store import compare_reads as reads
from autointerp.store.db import ActivationStore
from autointerp.store.errors import UserError
from autointerp.store.scorer_meta import primary_metrics
from autointerp.store.text import printable

from .summary import interval_summary

CONFIDENCE = 0.95
# Values resampled per vectorised bootstrap step (resamples x latents): ~16 MB of indices per side, however
# many latents there are.
BOOTSTRAP_BLOCK = 1 << 21
PROVENANCE_BASICS = ("model", "hook", "coder_kind", "num_latents")


class CompareError(UserError):
    """Two databases that cannot be compared: no scores, none from this explainer, no scorer in common."""


def compare(
    path_a: str | Path, path_b: str | Path, explainer: str = "default", n_boot: int = 2000, seed: int = 0
) -> dict:
    """Everything `autointerp compare` shows, as one JSON-able dict (B minus A throughout)."""
    with ActivationStore.open(path_a, readonly=True) as a, ActivationStore.open(path_b, readonly=True) as b:
        scorers_a, scorers_b = _scorers(a, explainer), _scorers(b, explainer)
        common = sorted(set(scorers_a) & set(scorers_b))
        if not common:
            raise CompareError(
                f"no scorer in common: {path_a} has {', '.join(scorers_a)}; {path_b} has {', '.join(scorers_b)}"
            )
        result: dict = {
            "explainer": explainer,
            "a": {"path": str(path_a), "provenance": _basics(a.provenance)},
            "b": {"path": str(path_b), "provenance": _basics(b.provenance)},
            "same_model_and_tokens": _same_model_and_tokens(a.provenance, b.provenance),
            "warnings": _warnings(path_a, path_b, a.provenance, b.provenance),
            "bootstrap": {"resamples": n_boot, "seed": seed, "confidence_level": CONFIDENCE},
            "scorers": {},
            "only_in_a": sorted(set(scorers_a) - set(scorers_b)),
            "only_in_b": sorted(set(scorers_b) - set(scorers_a)),
        }
        for scorer in common:
            metric = _primary_metric(a, b, scorer)
            values = {
                (side, kind): _metric_values(store, explainer, scorer, control, metric)
                for side, store in (("a", a), ("b", b))
                for kind, control in (("real", 0), ("control", 1))
            }
            # A generator per scorer, from the seed and the scorer's name: a scorer's interval does not depend on
            # which other scorers the files hold.
            rng = np.random.default_rng([seed, zlib.crc32(scorer.encode())])
            result["scorers"][scorer] = {
                "metric": metric,
                "a": {kind: describe(values["a", kind]) for kind in ("real", "control")},
                "b": {kind: describe(values["b", kind]) for kind in ("real", "control")},
                "difference": difference(values["a", "real"], values["b", "real"], n_boot, rng),
                "control_difference": _mean_difference(values["a", "control"], values["b", "control"]),
                # each run's error bars of this metric (scores.ci): None for a run whose rows have none
                "intervals": {
                    side: interval_summary(store.db.conn, explainer, scorer, metric)
                    for side, store in (("a", a), ("b", b))
                },
            }
    return result


def _scorers(store: ActivationStore, explainer: str) -> list[str]:
    """The scorers with scores from this explainer; refused in one line when there are none at all."""
    path, conn = store.path, store.db.conn
    if not reads.holds_scores(conn):
        raise CompareError(f"{path} holds no scores; run `autointerp batch` first")
    names = reads.scorers_of(conn, explainer)
    if not names:
        held = reads.explainers_scored(conn)
        raise CompareError(
            f"{path} holds no scores of the {printable(explainer)!r} explainer (it has {', '.join(held)}); "
            "choose one with --explainer"
        )
    return names


def _primary_metric(a: ActivationStore, b: ActivationStore, scorer: str) -> str:
    """The scorer's primary metric as both runs recorded it (store/scorer_meta.py); where they differ, AUROC (as the
    rule for a scorer recorded in neither: balanced accuracy only where both runs have one)."""
    metric_a, metric_b = (primary_metrics(s.db.conn, [scorer])[scorer] for s in (a, b))
    return metric_a if metric_a == metric_b else "auroc"


def _metric_values(store: ActivationStore, explainer: str, scorer: str, control: int, metric: str) -> np.ndarray:
    """One metric over latents as a float array; undefined values (null) left out."""
    return reads.metric_values(store.db.conn, explainer, scorer, control, metric)


def describe(values: np.ndarray) -> dict:
    """n, mean, median, sample standard deviation and quartiles; None where undefined (no values)."""
    if len(values) == 0:
        return {"n": 0, "mean": None, "median": None, "std": None, "q1": None, "q3": None}
    q1, median, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "median": float(median),
        "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        "q1": float(q1),
        "q3": float(q3),
    }


def _mean_difference(a: np.ndarray, b: np.ndarray) -> float | None:
    return float(b.mean() - a.mean()) if len(a) and len(b) else None


def difference(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator) -> dict:
    """B - A: the difference of means with a percentile bootstrap interval (each run resampled on its own: they
    are different latents, not pairs), and the two-sided Mann-Whitney U test of B against A. `p_b_greater` is
    U / (n_a n_b): the chance a latent of B scores above one of A (ties count half)."""
    from scipy.stats import bootstrap, mannwhitneyu  # here, not at the top: scipy.stats costs CLI start-up

    out: dict = {"mean": _mean_difference(a, b), "ci_low": None, "ci_high": None}
    out.update(mann_whitney_u=None, p_value=None, p_b_greater=None)
    if len(a) < 2 or len(b) < 2:  # no spread to resample or rank
        return out
    # Percentile, not BCa: BCa's jackknife is quadratic in the number of latents.
    ci = bootstrap(
        (a, b),
        lambda x, y, axis: np.mean(y, axis=axis) - np.mean(x, axis=axis),
        n_resamples=n_boot,
        batch=max(1, BOOTSTRAP_BLOCK // max(len(a), len(b))),
        vectorized=True,
        paired=False,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=rng,
    ).confidence_interval
    u, p = mannwhitneyu(b, a, alternative="two-sided")
    out.update(ci_low=_finite(ci.low), ci_high=_finite(ci.high))
    out.update(mann_whitney_u=_finite(u), p_value=_finite(p), p_b_greater=_finite(u / (len(a) * len(b))))
    return out


def _finite(x) -> float | None:
    """A float for JSON, None where scipy had none (NaN: every value tied)."""
    x = float(x)
    return x if np.isfinite(x) else None


def _basics(prov: dict | None) -> dict | None:
    return {k: prov.get(k) for k in PROVENANCE_BASICS} if prov is not None else None


def _same_model_and_tokens(pa: dict | None, pb: dict | None) -> bool:
    """The same model over the same tokens: what makes two coders' scores a like-for-like comparison."""
    if pa is None or pb is None:
        return False
    return all(pa.get(k) == pb.get(k) for k in ("model", "corpus_hash", "seq_len"))


def _warnings(path_a, path_b, pa: dict | None, pb: dict | None) -> list[str]:
    """Why the comparison may not be like for like; it is still made."""
    out = []
    for path, prov in ((path_a, pa), (path_b, pb)):
        if prov is None:
            out.append(f"{path} has no provenance: cannot tell whether both runs read the same model and tokens")
    if pa is None or pb is None:
        return out
    if pa.get("model") != pb.get("model"):
        out.append(
            f"{path_a} and {path_b} were made from different models ({pa.get('model')!r} and {pb.get('model')!r}): "
            "the comparison is not like for like"
        )
    if pa.get("corpus_hash") != pb.get("corpus_hash") or pa.get("seq_len") != pb.get("seq_len"):
        out.append(
            f"{path_a} and {path_b} were made from different tokens ({_tokens(pa)} and {_tokens(pb)}): "
            "the comparison is not like for like"
        )
    return out


def _tokens(prov: dict) -> str:
    return f"corpus {prov.get('corpus')!r} hash {str(prov.get('corpus_hash'))[:12]}, seq_len {prov.get('seq_len')}"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _intervals_line(intervals: dict) -> str | None:
    """Each run's mean 95% half-width (real, control) and how many latents' intervals overlap their control's."""
    said = []
    for side in ("a", "b"):
        iv = intervals.get(side)
        if iv is None:
            continue
        real, control = iv["real"], iv["control"]
        said.append(
            f"{side.upper()} ± {_num(real['half_width'])} (control ± {_num(control['half_width'])}),"
            f" {iv['overlap_control']} of {iv['latents']} overlap the control"
        )
    return "95% intervals, mean half-width: " + "; ".join(said) if said else None


def format_comparison(result: dict):
    """A rich renderable for the terminal: who A and B are, then one table per scorer and B - A under it."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    # Paths, provenance and scorer names come from files: shown literally, never as markup.
    parts: list = []
    for side in ("a", "b"):
        run = result[side]
        prov = run["provenance"]
        about = (
            f"model {prov['model']}, hook {prov['hook']}, {prov['coder_kind']}, {prov['num_latents']} latents"
            if prov
            else "no provenance"
        )
        parts.append(Text(printable(f"{side.upper()}: {run['path']} ({about})")))
    parts.append(Text(f"explainer {printable(result['explainer'])}; B - A throughout"))
    boot = result["bootstrap"]
    for scorer, s in result["scorers"].items():
        table = Table(title=printable(f"{scorer}: {s['metric']}"), title_justify="left")
        table.add_column("")
        for col in ("n", "mean", "median", "IQR"):
            table.add_column(col, justify="right")
        for side in ("a", "b"):
            for kind in ("real", "control"):
                d = s[side][kind]
                iqr = f"[{_num(d['q1'])}, {_num(d['q3'])}]" if d["n"] else "-"
                table.add_row(f"{side.upper()} {kind}", f"{d['n']:,}", _num(d["mean"]), _num(d["median"]), iqr)
        diff = s["difference"]
        line = f"B - A: {_num(diff['mean'], '+.3f')}"
        if diff["ci_low"] is not None:
            line += (
                f" [{_num(diff['ci_low'])}, {_num(diff['ci_high'])}] {boot['confidence_level']:.0%} CI "
                f"(bootstrap, {boot['resamples']})"
            )
        if diff["p_value"] is not None:
            line += f", Mann-Whitney p = {_num(diff['p_value'], '.3g')}"
        line += f"; control B - A: {_num(s['control_difference'], '+.3f')}"
        parts += [table, Text(line)]
        bars = _intervals_line(s.get("intervals") or {})
        if bars:
            parts.append(Text(bars))
    for side in ("a", "b"):
        if result[f"only_in_{side}"]:
            parts.append(Text(printable(f"only in {side.upper()}: {', '.join(result[f'only_in_{side}'])}")))
    return Group(*parts)
