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
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.engine.interpretation.metrics import METRIC_NAMES
from autointerp.engine.interpretation.scorers import SCORERS
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


def flat_rows(store: ActivationStore, explainer: str) -> list[dict]:
    """One row per explained latent: its explanation, statistics, and every scorer's metrics (and control's)."""
    stats = {r[0]: r[1:] for r in store.db.execute("select latent, frequency, max_act, n_windows from latents")}
    scores: dict[int, dict] = {}
    for r in store.results.scores(explainer=explainer):
        side = f"{r['scorer']}_control" if r["control"] else r["scorer"]
        entry = {m: r[m] for m in METRIC_NAMES}
        entry.update(n=r["n"], n_failed=r["n_failed"], explanation_latent=r["explanation_latent"])
        scores.setdefault(r["latent"], {})[side] = entry
    audits = {
        r[0]: r[1:]
        for r in store.db.execute(
            "select latent, rating, explanation, note, flagged, updated_at from audits where explainer = ?", [explainer]
        )
    }
    out = []
    for row in store.db.execute(
        "select latent, text, error, model, n_examples, prompt_tokens, output_tokens from explanations"
        " where explainer = ? order by latent",
        [explainer],
    ):
        latent, text, error, model, n_examples, pt, ot = row
        freq, max_act, n_windows = stats.get(latent, (None, None, None))
        out.append(
            {
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
                "scores": scores.get(latent, {}),
                **dict(
                    zip(
                        ("audit_rating", "audit_explanation", "audit_note", "audit_flagged", "audit_at"),
                        audits.get(latent, (None,) * 5),
                    )
                ),
            }
        )
    return out


def export(cfg: Config, fmt: str, out: str | Path) -> dict:
    """Write the export; returns {"files": n, "latents": n, "path": ...}. Paths and the database are checked
    before anything is written, and files appear whole or not at all."""
    preflight(cfg.db, must_exist=True, writing=False)
    out = output_path(out, fmt, cfg.db)
    with ActivationStore.open(cfg.db, readonly=True) as store:
        if store.provenance is None:
            raise ExportError(f"{cfg.db} holds no activation cache yet: nothing to export")
        rows = flat_rows(store, cfg.explain.explainer)
        try:
            if fmt == "json":
                _replace_file(out, lambda f: json.dump(rows, f, indent=1))
                return {"files": 1, "latents": len(rows), "path": str(out)}
            if fmt == "csv":
                _replace_file(out, lambda f: _write_csv(f, rows))
                return {"files": 1, "latents": len(rows), "path": str(out)}
            return _delphi(cfg, store, rows, out)
        except OSError as e:
            raise ExportError(f"cannot write --out {out} ({e.strerror or e})") from None


def _write_csv(f, rows: list[dict]) -> None:
    sides = sorted({side for r in rows for side in r["scores"]})
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
        "audit_explanation",
        "audit_note",
        "audit_flagged",
        "audit_at",
    ]
    w = csv.writer(f)
    w.writerow(base + metric_cols)
    for r in rows:
        cells = [r[k] for k in base]
        for col in metric_cols:
            side, metric = col.split(".")
            cells.append(r["scores"].get(side, {}).get(metric))
        w.writerow(cells)


def _delphi(cfg: Config, store: ActivationStore, rows: list[dict], out: Path) -> dict:
    """delphi's folder, written beside `out` under a temporary name and renamed into place when whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        files = _delphi_files(cfg, store, rows, tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "latents": len(rows), "path": str(out)}


def _delphi_files(cfg: Config, store: ActivationStore, rows: list[dict], out: Path) -> int:
    from autointerp.engine.interpretation.interpret import Interpreter

    module = _safe_name(store.provenance["hook"])
    (out / "explanations").mkdir(parents=True, exist_ok=True)
    files = 0
    for r in rows:
        if r["explanation"] is None:
            continue
        (out / "explanations" / f"{module}_latent{r['latent']}.txt").write_text(json.dumps(r["explanation"]))
        files += 1
    interp = Interpreter(cfg, store, None)  # only for decoding windows into tokens and activations
    try:
        for s in store.results.scores(explainer=cfg.explain.explainer):
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
    return files
