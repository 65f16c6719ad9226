"""`autointerp export`: results in delphi's layout, or as one flat JSON / CSV file.

delphi layout: `explanations/<module>_latent<N>.txt` holds the explanation as a JSON string, and
`scores/<scorer>/<module>_latent<N>.txt` a JSON list with one record per scored example (str_tokens,
activations, distance, activating, prediction, probability, correct), as delphi's own scorers write them.
Control scores go to `scores/<scorer>_control/`. The SQLite file itself stays the full record.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autointerp.store.db import ActivationStore

from .config import Config
from .metrics import METRIC_NAMES

def flat_rows(store: ActivationStore, explainer: str) -> list[dict]:
    """One row per explained latent: its explanation, statistics, and every scorer's metrics (and control's)."""
    stats = {r[0]: r[1:] for r in store.db.execute("select latent, frequency, max_act, n_windows from latents")}
    scores: dict[int, dict] = {}
    for r in store.results.scores(explainer=explainer):
        side = f"{r['scorer']}_control" if r["control"] else r["scorer"]
        entry = {m: r[m] for m in METRIC_NAMES}
        entry.update(n=r["n"], n_failed=r["n_failed"], explanation_latent=r["explanation_latent"])
        scores.setdefault(r["latent"], {})[side] = entry
    audits = {r[0]: r[1:] for r in store.db.execute(
        "select latent, rating, explanation, note, flagged, updated_at from audits where explainer = ?", [explainer])}
    out = []
    for row in store.db.execute(
        "select latent, text, error, model, n_examples, prompt_tokens, output_tokens from explanations"
        " where explainer = ? order by latent", [explainer]
    ):  # fmt: skip
        latent, text, error, model, n_examples, pt, ot = row
        freq, max_act, n_windows = stats.get(latent, (None, None, None))
        out.append({"latent": latent, "explainer": explainer, "explanation": text, "error": error, "model": model,
                    "frequency": freq, "max_act": max_act, "n_windows": n_windows, "n_examples": n_examples,
                    "prompt_tokens": pt, "output_tokens": ot, "scores": scores.get(latent, {}),
                    **dict(zip(("audit_rating", "audit_explanation", "audit_note", "audit_flagged", "audit_at"),
                               audits.get(latent, (None,) * 5)))})  # fmt: skip
    return out


def export(cfg: Config, fmt: str, out: str | Path) -> dict:
    """Write the export; returns {"files": n, "latents": n, "path": ...}."""
    out = Path(out)
    with ActivationStore.open(cfg.db, readonly=True) as store:
        if store.provenance is None:
            from .interpret import InterpretError

            raise InterpretError(f"{cfg.db} holds no activation cache yet: nothing to export")
        rows = flat_rows(store, cfg.explain.explainer)
        if fmt == "json":
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=1), encoding="utf-8")
            return {"files": 1, "latents": len(rows), "path": str(out)}
        if fmt == "csv":
            out.parent.mkdir(parents=True, exist_ok=True)
            sides = sorted({side for r in rows for side in r["scores"]})
            metric_cols = [f"{side}.{m}" for side in sides for m in (*METRIC_NAMES, "n", "n_failed")]
            base = ["latent", "explainer", "explanation", "error", "model", "frequency", "max_act", "n_windows",
                    "n_examples", "prompt_tokens", "output_tokens", "audit_rating", "audit_explanation", "audit_note",
                    "audit_flagged", "audit_at"]  # fmt: skip
            with out.open("w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(base + metric_cols)
                for r in rows:
                    cells = [r[k] for k in base]
                    for col in metric_cols:
                        side, metric = col.split(".")
                        cells.append(r["scores"].get(side, {}).get(metric))
                    w.writerow(cells)
            return {"files": 1, "latents": len(rows), "path": str(out)}
        return _delphi(cfg, store, rows, out)


def _delphi(cfg: Config, store: ActivationStore, rows: list[dict], out: Path) -> dict:
    from .interpret import Interpreter

    module = store.provenance["hook"]
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
            examples = {e.window: e for e in interp.examples(s["latent"], [o["window"] for o in outcomes])}
            records = []
            for o in outcomes:
                ex = examples[o["window"]]
                records.append({
                    "str_tokens": ex.tokens, "activations": [float(a) for a in ex.acts],
                    "distance": o["decile"] if o["label"] else -1, "activating": bool(o["label"]),
                    "prediction": None if o["failed"] else bool(o["prediction"]), "probability": o["probability"],
                    "correct": None if o["failed"] else bool(o["prediction"]) == bool(o["label"]),
                })  # fmt: skip
            folder = out / "scores" / (s["scorer"] + ("_control" if s["control"] else ""))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{module}_latent{s['latent']}.txt").write_text(json.dumps(records))
            files += 1
    finally:
        interp.close()
    return {"files": files, "latents": len(rows), "path": str(out)}
