"""`autointerp export --format delphi`: results in delphi's layout.

`explanations/<module>_latent<N>.txt` holds the explanation as a JSON string, and `scores/<scorer>/<module>_latent<N>.txt`
a JSON list with one record per scored example (str_tokens, activations, distance, activating, prediction, probability,
correct), as delphi's own scorers write them. Control scores go to `scores/<scorer>_control/`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.store import export_reads as reads
from autointerp.store.db import ActivationStore
from autointerp.store.killpoints import kill_point
from autointerp.store.scorer_meta import read_scorers, scorer_meta

from .common import cannot_write, check_database, folder_output, open_results, safe_name, swap_into_place


def export_delphi(cfg: Config, out: str | Path) -> dict:
    """delphi's folder, written beside `out` under a temporary name and renamed into place when whole."""
    check_database(cfg)
    path = folder_output(out, "delphi's")
    with open_results(cfg) as store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
            try:
                files, latents = _delphi_files(cfg, store, tmp)
                swap_into_place(tmp, path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            raise cannot_write(path, e) from None
    return {"files": files, "latents": latents, "path": str(path)}


def _delphi_files(cfg: Config, store: ActivationStore, out: Path) -> tuple[int, int]:
    """Write the files; returns (files, explained latents). Explanations and scores are read one at a time."""
    from autointerp.engine.interpretation.interpret import Interpreter

    module = safe_name(store.provenance["hook"])
    (out / "explanations").mkdir(parents=True, exist_ok=True)
    files = latents = 0
    for latent, text in reads.explanation_texts(store.db.conn, cfg.explain.explainer):
        latents += 1
        if text is None:
            continue
        (out / "explanations" / f"{module}_latent{latent}.txt").write_text(json.dumps(text))
        files += 1
    recorded = read_scorers(store.db.conn)
    on_windows_of: dict[str, bool] = {}  # per scorer, as it recorded (store/scorer_meta.py)
    interp = Interpreter(cfg, store, None)  # only for decoding windows into tokens and activations
    try:
        for s in store.results.iter_scores(explainer=cfg.explain.explainer):
            outcomes = s["outcomes"] or []
            # Intervention and generation items are prompts and generated texts, not cached windows.
            if s["scorer"] not in on_windows_of:
                on_windows_of[s["scorer"]] = scorer_meta(store.db.conn, s["scorer"], recorded).outcomes_are_windows
            on_windows = on_windows_of[s["scorer"]]
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
            folder = out / "scores" / safe_name(s["scorer"] + ("_control" if s["control"] else ""))
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{module}_latent{s['latent']}.txt").write_text(json.dumps(records))
            files += 1
            kill_point("export")
    finally:
        interp.close()
    return files, latents
