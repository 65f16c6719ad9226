"""`autointerp export`: results in delphi's layout, or as one flat JSON / CSV file.

delphi layout: `explanations/<module>_latent<N>.txt` holds the explanation as a JSON string, and
`scores/<scorer>/<module>_latent<N>.txt` a JSON list with one record per scored example (str_tokens,
activations, distance, activating, prediction, probability, correct), as delphi's own scorers write them.
Control scores go to `scores/<scorer>_control/`. The SQLite file itself stays the full record.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.engine.interpretation.metrics import METRIC_NAMES
from autointerp.engine.interpretation.scorers import SCORERS
from autointerp.store.audits import AUDITS_BY_LATENT, export_columns
from autointerp.store.db import ActivationStore, preflight, why_not_creatable
from autointerp.store.errors import UserError
from autointerp.store.killpoints import kill_point


def _outcomes_are_windows(scorer: str) -> bool:
    """Whether a scorer's outcomes are cached windows (generation's texts and intervention's prompts are not)."""
    return scorer not in SCORERS or SCORERS[scorer].outcomes_are_windows


def _safe_name(text: str) -> str:
    """A file name from database text (a hook, a scorer): never a path out of the export folder."""
    return re.sub(r"[^\w.\-]", "_", str(text)).lstrip(".") or "_"


class ExportError(UserError):
    """An output path that cannot be written, stated in one line."""


def output_path(out: str | Path, fmt: str, db: str | Path) -> Path:
    """Where an export goes, checked before anything is written. A file format given a folder (an existing one,
    or a path ending in a slash) writes `<database name>.<format>` inside it; delphi's layout is a folder."""
    text = str(out)
    out = Path(out).expanduser()
    if fmt in ("json", "csv") and (text.endswith(("/", os.sep)) or out.is_dir()):
        out = out / f"{Path(db).stem}.{fmt}"
    if fmt == "delphi" and out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; delphi's layout is a folder: name a folder")
    if fmt in ("json", "csv") and out.is_dir():
        raise ExportError(f"--out {out} is a folder")
    why = why_not_creatable(out) or (f"{out} is not writable" if out.exists() and not os.access(out, os.W_OK) else None)
    if why:
        raise ExportError(f"cannot write --out {out}: {why}")
    return out


def _replace_file(out: Path, write) -> None:
    """Write through a temporary file beside `out`, then rename it over `out`: a killed export leaves the old
    file (or none), never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_sides(store: ActivationStore, explainer: str) -> list[str]:
    """Every scorer column of an export ("detection", "detection_control", ...), sorted."""
    rows = store.db.execute("select distinct scorer, control from scores where explainer = ?", [explainer])
    return sorted(f"{scorer}_control" if control else scorer for scorer, control in rows)


def flat_rows(store: ActivationStore, explainer: str) -> Iterator[dict]:
    """One row per explained latent: its explanation, statistics, audits (every rater's, as one set of columns) and
    every scorer's metrics (and control's), in latent order. Streamed: the explanations (joined with statistics and audits) and the scores' metric columns
    (never their outcomes) are read by two cursors in the same order and merged, so one latent is held at a time
    at any number of latents."""
    metric_cols = ", ".join(METRIC_NAMES)
    scores = store.db.execute(
        f"select latent, scorer, control, {metric_cols}, n, n_failed, explanation_latent from scores"
        " where explainer = ? order by latent, scorer, control",
        [explainer],
    )
    pending = next(scores, None)
    for row in store.db.execute(
        "select e.latent, e.text, e.error, e.model, e.n_examples, e.prompt_tokens, e.output_tokens,"
        " l.frequency, l.max_act, l.n_windows, a.audits"
        " from explanations e left join latents l on l.latent = e.latent"
        f" left join ({AUDITS_BY_LATENT}) a on a.latent = e.latent"
        " where e.explainer = ? order by e.latent",
        [explainer, explainer],
    ):
        latent, text, error, model, n_examples, pt, ot, freq, max_act, n_windows, audits = row
        sides: dict[str, dict] = {}
        while pending is not None and pending[0] <= latent:
            if pending[0] == latent:
                _, scorer, control, *values = pending
                entry = dict(zip(METRIC_NAMES, values))
                entry.update(n=values[-3], n_failed=values[-2], explanation_latent=values[-1])
                sides[f"{scorer}_control" if control else scorer] = entry
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


def export(cfg: Config, fmt: str, out: str | Path) -> dict:
    """Write the export; returns {"files": n, "latents": n, "path": ...}. Paths and the database are checked
    before anything is written, and files appear whole or not at all."""
    if fmt == "neuronpedia":  # a folder of batched JSONL.gz tables, in its own module
        from .export_neuronpedia import export_neuronpedia

        return export_neuronpedia(cfg, out)
    preflight(cfg.db, must_exist=True, writing=False)
    out = output_path(out, fmt, cfg.db)
    with ActivationStore.open(cfg.db, readonly=True) as store:
        if store.provenance is None:
            raise ExportError(f"{cfg.db} holds no activation cache yet: nothing to export")
        explainer = cfg.explain.explainer
        written = {"n": 0}
        try:
            if fmt == "json":
                _replace_file(out, lambda f: written.update(n=_write_json(f, flat_rows(store, explainer))))
                return {"files": 1, "latents": written["n"], "path": str(out)}
            if fmt == "csv":
                sides = score_sides(store, explainer)
                _replace_file(out, lambda f: written.update(n=_write_csv(f, flat_rows(store, explainer), sides)))
                return {"files": 1, "latents": written["n"], "path": str(out)}
            return _delphi(cfg, store, out)
        except OSError as e:
            raise ExportError(f"cannot write --out {out} ({e.strerror or e})") from None


def _write_csv(f, rows: Iterator[dict], sides: list[str]) -> int:
    metric_cols = [f"{side}.{m}" for side in sides for m in (*METRIC_NAMES, "n", "n_failed")]
    base = [
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
    ]
    w = csv.writer(f)
    w.writerow(base + metric_cols)
    n = 0
    for r in rows:
        cells = [json.dumps(r[k], sort_keys=True) if isinstance(r[k], dict) else r[k] for k in base]
        for col in metric_cols:
            side, metric = col.split(".")
            cells.append(r["scores"].get(side, {}).get(metric))
        w.writerow(cells)
        n += 1
    return n


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename a finished folder to `out`; an existing `out` is moved aside first and removed after, so a reader
    sees the old folder or the new one, never a mix."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _delphi(cfg: Config, store: ActivationStore, out: Path) -> dict:
    """delphi's folder, written beside `out` under a temporary name and renamed into place when whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        files, latents = _delphi_files(cfg, store, tmp)
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "latents": latents, "path": str(out)}


def _delphi_files(cfg: Config, store: ActivationStore, out: Path) -> tuple[int, int]:
    """Write the files; returns (files, explained latents). Explanations and scores are read one at a time."""
    from autointerp.engine.interpretation.interpret import Interpreter

    module = _safe_name(store.provenance["hook"])
    (out / "explanations").mkdir(parents=True, exist_ok=True)
    files = latents = 0
    for latent, text in store.db.execute(
        "select latent, text from explanations where explainer = ? order by latent", [cfg.explain.explainer]
    ):
        latents += 1
        if text is None:
            continue
        (out / "explanations" / f"{module}_latent{latent}.txt").write_text(json.dumps(text))
        files += 1
    interp = Interpreter(cfg, store, None)  # only for decoding windows into tokens and activations
    try:
        for s in store.results.iter_scores(explainer=cfg.explain.explainer):
            outcomes = s["outcomes"] or []
            # Intervention and generation items are prompts and generated texts, not cached windows.
            on_windows = _outcomes_are_windows(s["scorer"])
            windows = [o["window"] for o in outcomes if o["window"] >= 0] if on_windows else []
            examples = {e.window: e for e in interp.examples(s["latent"], windows)}
            records = []
            for o in outcomes:
                ex = examples.get(o["window"]) if on_windows else None
                records.append(
                    {
                        "str_tokens": ex.tokens if ex else None,
                        "activations": [float(a) for a in ex.acts] if ex else None,
                        "distance": o["decile"] if o["label"] else -1,
                        "activating": bool(o["label"]),
                        "prediction": None if o["failed"] else bool(o["prediction"]),
                        "probability": o["probability"],
                        "correct": None if o["failed"] else bool(o["prediction"]) == bool(o["label"]),
                    }
                )
            folder = out / "scores" / _safe_name(s["scorer"] + ("_control" if s["control"] else ""))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{module}_latent{s['latent']}.txt").write_text(json.dumps(records))
            files += 1
            kill_point("export")
    finally:
        interp.close()
    return files, latents
