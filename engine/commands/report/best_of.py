"""The report's best-of-N section: what keeping the best of N candidate explanations gained on held-out scores.

The gain is paired: per latent, the kept explanation's held-out score minus the first draw's on the same items (the
first draw is what a single-candidate run at the same temperature would have kept). Where the first draw was kept
the difference is 0 by construction and counted as such.
"""

from __future__ import annotations

import json
import math

import numpy as np

from autointerp.store import report_reads as reads


def best_of_report(conn, explainer: str, metrics: dict[str, str]) -> dict | None:
    """{"latents", "chosen_first", "by_draw", "scorers": {scorer: {"metric", "n", "kept", "first", "gain",
    "gain_ci95", "missing"}}, "rescoring"} or None when no latent of this explainer has candidates. Streams: one row
    per latent is read at a time, and only two float arrays per scorer are kept."""
    n = reads.candidate_latents(conn, explainer)
    if not n:
        return None
    by_draw = reads.chosen_by_draw(conn, explainer)
    out: dict = {"latents": n, "chosen_first": by_draw.get(0, 0), "by_draw": by_draw, "scorers": {}}
    rescoring = {"calls": 0, "prompt_tokens": 0, "output_tokens": 0}
    for scorer, metric in metrics.items():
        kept, first, missing = [], [], 0
        cursor = reads.first_draws(conn, explainer, scorer, metric)
        for value, first_chosen, heldout in cursor:
            if first_chosen:
                other = value
            else:
                entry = (json.loads(heldout) if heldout else {}).get(scorer)
                other = None if entry is None else entry.get("value")
                if entry is not None:
                    rescoring["calls"] += entry.get("n_calls", 0)
                    rescoring["prompt_tokens"] += entry.get("prompt_tokens", 0)
                    rescoring["output_tokens"] += entry.get("output_tokens", 0)
            if value is None or other is None:
                missing += 1  # not scored yet, or a metric undefined for one of the two: left out, counted
                continue
            kept.append(value)
            first.append(other)
        k, f = np.asarray(kept, float), np.asarray(first, float)
        d = k - f
        ci = None
        if len(d) >= 2:
            half = 1.96 * float(d.std(ddof=1)) / math.sqrt(len(d))  # normal interval of a mean of paired differences
            ci = [float(d.mean()) - half, float(d.mean()) + half]
        out["scorers"][scorer] = {
            "metric": metric,
            "n": len(d),
            "kept": float(k.mean()) if len(k) else None,
            "first": float(f.mean()) if len(f) else None,
            "gain": float(d.mean()) if len(d) else None,
            "gain_ci95": ci,
            "missing": missing,
        }
    out["rescoring"] = rescoring
    return out


def print_best_of(section: dict, console) -> None:
    """A short plain block: how often a later draw won, and the held-out gain per scorer."""
    later = section["latents"] - section["chosen_first"]
    console.print(
        f"best-of-N: {section['latents']:,} latents with candidates; a later draw was kept for {later:,} "
        f"(the first for {section['chosen_first']:,})",
        highlight=False,
        markup=False,
    )
    for scorer, s in section["scorers"].items():
        if not s["n"]:
            console.print(f"  {scorer}: no held-out pairs yet", highlight=False, markup=False)
            continue
        ci = s["gain_ci95"]
        interval = f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""
        console.print(
            f"  {scorer} {s['metric']}: kept {s['kept']:.3f} vs first draw {s['first']:.3f}, "
            f"gain {s['gain']:+.3f}{interval} over {s['n']:,} latents"
            + (f" ({s['missing']:,} without both scores)" if s["missing"] else ""),
            highlight=False,
            markup=False,
        )
