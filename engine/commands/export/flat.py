"""`autointerp export --format json|csv`: one flat file, one row per explained latent (its explanation, statistics,
audits and every scorer's metrics, and the control's). The SQLite file itself stays the full record."""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.engine.interpretation.metrics import METRIC_NAMES
from autointerp.store import export_reads as reads
from autointerp.store.audits import export_columns
from autointerp.store.db import ActivationStore

from .common import cannot_write, check_database, file_output, open_results, replace_file


def _side(scorer: str, control: int) -> str:
    return f"{scorer}_control" if control else scorer


def score_sides(store: ActivationStore, explainer: str) -> list[str]:
    """Every scorer column of an export ("detection", "detection_control", ...), sorted."""
    return sorted(_side(scorer, control) for scorer, control in reads.score_sides(store.db.conn, explainer))


def flat_rows(store: ActivationStore, explainer: str) -> Iterator[dict]:
    """One row per explained latent: its explanation, statistics, audits (every rater's, as one set of columns) and
    every scorer's metrics (and control's), in latent order. Streamed: the explanations (joined with statistics and audits) and the scores' metric columns
    (never their outcomes) are read by two cursors in the same order and merged, so one latent is held at a time
    at any number of latents."""
    scores = reads.score_metric_rows(store.db.conn, explainer, ci=True)
    pending = next(scores, None)
    for row in reads.explanation_rows(store.db.conn, explainer):
        latent, text, error, model, n_examples, pt, ot, freq, max_act, n_windows, audits = row
        sides: dict[str, dict] = {}
        while pending is not None and pending[0] <= latent:
            if pending[0] == latent:
                _, scorer, control, *values, ci = pending
                entry = dict(zip(METRIC_NAMES, values))
                entry.update(n=values[-3], n_failed=values[-2], explanation_latent=values[-1])
                # {metric: [low, high]}, the 95% intervals (null: scored before schema 13 and not upgraded)
                entry["ci"] = json.loads(ci) if ci else None
                sides[_side(scorer, control)] = entry
            pending = next(scores, None)
        yield {
            "latent": latent,
            "explainer": explainer,
            "explanation": text,
            "error": error,
            "model": model,
            "frequency": freq,
            "max_act": max_act,
            "n_windows": n_windows,
            "n_examples": n_examples,
            "prompt_tokens": pt,
            "output_tokens": ot,
            "scores": sides,
            # One row per latent however many rated it: the ratings by rater, their mean, and the agreed rating.
            **export_columns(json.loads(audits) if audits else {}),
        }


def _write_json(f, rows: Iterator[dict]) -> int:
    """The bytes `json.dump(list(rows), f, indent=1)` writes, one row at a time; returns how many rows."""
    n = 0
    for r in rows:
        f.write(("[\n" if n == 0 else ",\n") + textwrap.indent(json.dumps(r, indent=1), " "))
        n += 1
    f.write("\n]" if n else "[]")
    return n


CSV_BASE = (
    "latent",
    "explainer",
    "explanation",
    "error",
    "model",
    "frequency",
    "max_act",
    "n_windows",
    "n_examples",
    "prompt_tokens",
    "output_tokens",
    "audit_rating",
    "audit_mean",
    "audit_ratings",
    "audit_explanation",
    "audit_note",
    "audit_flagged",
    "audit_at",
)


def _write_csv(f, rows: Iterator[dict], sides: list[str]) -> int:
    metric_cols = [f"{side}.{m}" for side in sides for m in (*METRIC_NAMES, "n", "n_failed")]
    # Each metric's 95% interval after every metric column (`<side>.<metric>_low`, `_high`; empty where none).
    ci_cols = [(side, m, end) for side in sides for m in METRIC_NAMES for end in (0, 1)]
    w = csv.writer(f)
    w.writerow([*CSV_BASE, *metric_cols, *(f"{side}.{m}_{('low', 'high')[end]}" for side, m, end in ci_cols)])
    n = 0
    for r in rows:
        cells = [json.dumps(r[k], sort_keys=True) if isinstance(r[k], dict) else r[k] for k in CSV_BASE]
        for col in metric_cols:
            side, metric = col.split(".")
            cells.append(r["scores"].get(side, {}).get(metric))
        for side, metric, end in ci_cols:
            bounds = (r["scores"].get(side, {}).get("ci") or {}).get(metric)
            cells.append(bounds[end] if bounds else None)
        w.writerow(cells)
        n += 1
    return n


def _export_file(cfg: Config, out: str | Path, ext: str, write) -> dict:
    """One file written whole: `write(f, store, explainer)` returns the rows written."""
    check_database(cfg)
    path = file_output(out, ext, cfg.db)
    with open_results(cfg) as store:
        written = {"n": 0}
        try:
            replace_file(path, lambda f: written.update(n=write(f, store, cfg.explain.explainer)))
        except OSError as e:
            raise cannot_write(path, e) from None
    return {"files": 1, "latents": written["n"], "path": str(path)}


def export_json(cfg: Config, out: str | Path) -> dict:
    """One JSON list of the flat rows."""
    return _export_file(cfg, out, "json", lambda f, store, explainer: _write_json(f, flat_rows(store, explainer)))


def export_csv(cfg: Config, out: str | Path) -> dict:
    """One CSV table of the flat rows: a column per scorer side and metric."""
    return _export_file(
        cfg,
        out,
        "csv",
        lambda f, store, explainer: _write_csv(f, flat_rows(store, explainer), score_sides(store, explainer)),
    )
