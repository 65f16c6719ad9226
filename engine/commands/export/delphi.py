"""`autointerp export --format delphi`: results in the layout delphi (EleutherAI, eai-delphi 0.1.3) writes and its
reader (`delphi.log.result_analysis`: `load_data`, `get_agg_metrics`, `log_results`) reads:

- `explanations/<module>_latent<N>.txt`: the explanation as a JSON string;
- `scores/<scorer>/<module>_latent<N>.txt`: a JSON list with one record per scored window (str_tokens, activations,
  distance, activating, prediction, probability, correct), as delphi's classifier scorers write them; controls in
  `scores/<scorer>_control/`. Scorers delphi has too are named as delphi names them (fuzzing: `fuzz`);
- `log/hookpoint_firing_counts.pt`: {module: tokens each latent fired on}, as delphi's cache saves it;
- `run_config.json`: what the file records of how it was made, under delphi's RunConfig keys.

Only what the file holds is written: a score row without outcomes gets no file, an answer that is not there (a
failed call, a scorer that gives no yes/no such as embedding) is null, and a scorer whose outcomes are not single
windows labelled activating or not (generation, intervention, intruder) is left out and named in the summary.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.store import export_reads as reads
from autointerp.store.db import ActivationStore
from autointerp.store.directions import read_vocab
from autointerp.store.killpoints import kill_point
from autointerp.store.scorer_meta import ScorerMeta, read_scorers, scorer_meta

from .common import cannot_write, check_database, folder_output, open_results, safe_name, swap_into_place

# Our scorer -> delphi's name for the same scorer (delphi/scorers: detection, fuzz, embedding, surprisal, simulation,
# intruder); one not listed keeps its name.
DELPHI_SCORER_NAMES = {"fuzzing": "fuzz"}
_NOT_WINDOWS = {"text": "generated texts", "prompt": "steered prompts"}  # store/scorer_meta.py OUTCOMES


def delphi_scorer_name(scorer: str) -> str:
    return DELPHI_SCORER_NAMES.get(scorer, scorer)


def left_out_because(meta: ScorerMeta) -> str | None:
    """Why a scorer's rows have no place in delphi's layout (None: they do). delphi's reader takes one record per
    window labelled activating or not, and joins each record's str_tokens."""
    if meta.outcome != "window":
        return f"its outcomes are {_NOT_WINDOWS.get(meta.outcome, meta.outcome)}, not cached windows"
    if meta.evidence == "groups":
        return "its outcomes are groups of windows (was the intruder named), not windows labelled activating or not"
    return None


def export_delphi(cfg: Config, out: str | Path) -> dict:
    """delphi's folder, written beside `out` under a temporary name and renamed into place when whole. The summary
    adds `left_out`: {scorer: why its rows are not in the layout}."""
    check_database(cfg)
    path = folder_output(out, "delphi's")
    with open_results(cfg) as store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
            try:
                summary = _delphi_files(cfg, store, tmp)
                swap_into_place(tmp, path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as e:
            raise cannot_write(path, e) from None
    return {**summary, "path": str(path)}


def _delphi_files(cfg: Config, store: ActivationStore, out: Path) -> dict:
    """Write the files; returns {"files", "latents" (explained), "left_out"}. Rows are read one at a time."""
    module = safe_name(store.provenance["hook"])
    conn = store.db.conn
    (out / "explanations").mkdir(parents=True)
    (out / "scores").mkdir()
    files = latents = 0
    for latent, text in reads.explanation_texts(conn, cfg.explain.explainer):
        latents += 1
        if text is None:
            continue
        (out / "explanations" / f"{module}_latent{latent}.txt").write_text(json.dumps(text))
        files += 1
    recorded = read_scorers(conn)
    left_out: dict[str, str | None] = {}  # per scorer met: why it is left out, None where it is not
    with_files: set[str] = set()  # delphi's names of the scorers given files
    windows = _WindowText(cfg, store)
    try:
        for s in store.results.iter_scores(explainer=cfg.explain.explainer):
            scorer = s["scorer"]
            if scorer not in left_out:
                left_out[scorer] = left_out_because(scorer_meta(conn, scorer, recorded))
            if left_out[scorer] is not None or not s["outcomes"]:  # no outcomes: no file (delphi writes no empty one)
                continue
            n_deciles = len(s["recall_per_decile"] or []) or cfg.sample.n_deciles
            texts = windows(s["latent"], [o["window"] for o in s["outcomes"]])
            records = [_record(o, *texts[o["window"]], n_deciles) for o in s["outcomes"]]
            folder = out / "scores" / safe_name(delphi_scorer_name(scorer) + ("_control" if s["control"] else ""))
            folder.mkdir(exist_ok=True)
            (folder / f"{module}_latent{s['latent']}.txt").write_text(json.dumps(records))
            with_files.add(delphi_scorer_name(scorer))
            files += 1
            kill_point("export")
    finally:
        windows.close()
    (out / "log").mkdir()
    _write_firing_counts(store, module, out / "log" / "hookpoint_firing_counts.pt")
    run_config = _run_config(cfg, store, module, sorted(with_files))
    (out / "run_config.json").write_text(json.dumps(run_config, indent=4))
    reasons = {scorer: why for scorer, why in left_out.items() if why is not None}
    return {"files": files + 2, "latents": latents, "left_out": reasons}


def _record(o: dict, str_tokens: list[str], activations: list[float], n_deciles: int) -> dict:
    """One outcome as delphi's ClassifierOutput. `distance` is delphi's quantile: 0 for the strongest decile up to
    n_deciles - 1 for the weakest (ours counts 1 = weakest), -1 for a window shown as not activating. An answer
    that is not there (failed, or a scorer with no yes/no) is null, and so is whether it was correct."""
    activating = bool(o["label"])
    prediction = None if o["failed"] or o["prediction"] is None else bool(o["prediction"])
    probability = o["probability"]
    if o["failed"] or probability is None or not math.isfinite(probability):
        probability = None  # our AUROC leaves these out; delphi's drops nulls
    in_range = 1 <= o["decile"] <= n_deciles
    return {
        "str_tokens": str_tokens,
        "activations": activations,
        "distance": n_deciles - o["decile"] if activating and in_range else -1,
        "activating": activating,
        "prediction": prediction,
        "probability": probability,
        "correct": None if prediction is None else prediction == activating,
    }


class _WindowText:
    """Cached windows as delphi's str_tokens and activations. Tokens read as the file's vocabulary has them (each id
    decoded alone: what delphi's `tokenizer.batch_decode` gives), else through the cache model's tokenizer."""

    def __init__(self, cfg: Config, store: ActivationStore):
        from autointerp.engine.interpretation.interpret import Interpreter

        self.interp = Interpreter(cfg, store, None)  # only for reading windows
        vocab = read_vocab(store.db)
        self.vocab = vocab if len(vocab) >= int(store.provenance["vocab_size"]) else None

    def __call__(self, latent: int, windows: list[int]) -> dict[int, tuple[list[str], list[float]]]:
        if self.vocab is None:
            return {e.window: (e.tokens, [float(a) for a in e.acts]) for e in self.interp.examples(latent, windows)}
        q = self.interp.queries
        fetched = q.fetch(q.activating(latent), windows)
        return {w: ([self.vocab[t] for t in lw.tokens], [float(a) for a in lw.acts]) for w, lw in zip(windows, fetched)}

    def close(self) -> None:
        self.interp.close()


def _write_firing_counts(store: ActivationStore, module: str, path: Path) -> None:
    """{module: int64 tensor of each latent's firing count}: the tokens it fired on, from the statistics (0 for a
    latent that never fired), as delphi's LatentCache.save_firing_counts writes it."""
    import torch

    counts = torch.zeros(int(store.provenance["num_latents"]), dtype=torch.int64)
    for latent, count in reads.firing_counts(store.db.conn):
        counts[latent] = int(count)
    torch.save({module: counts}, path)


def _run_config(cfg: Config, store: ActivationStore, module: str, scorers: list[str]) -> dict:
    """delphi's RunConfig keys, filled from the provenance, the cache's config and the latest batch run's recorded
    config; a key the file does not record is left out (delphi's reader takes its default)."""
    prov = store.provenance
    cache = json.loads(prov["config"] or "{}")  # the cache's config, as the cache recorded it
    run = reads.latest_run_config(store.db.conn)
    sample, score = run.get("sample") or {}, run.get("score") or {}
    n_deciles, per_decile = sample.get("n_deciles"), sample.get("activating_per_decile")
    config = {
        "cache_cfg": {
            "dataset_repo": prov["corpus"],
            "cache_ctx_len": prov["seq_len"],
            "n_tokens": store.n_tokens(),
            "batch_size": cache.get("batch_size"),
        },
        "constructor_cfg": {
            "example_ctx_len": cache.get("window_len"),
            "min_examples": sample.get("min_windows"),
            "n_non_activating": sample.get("n_non_activating"),
        },
        "sampler_cfg": {
            "n_examples_train": sample.get("n_explain"),
            "n_examples_test": n_deciles * per_decile if n_deciles and per_decile else None,
            "n_quantiles": n_deciles,
        },
        "model": prov["model"],
        "sparse_model": prov["coder_path"],
        "hookpoints": [module],
        "explainer_model": reads.explainer_model(store.db.conn, cfg.explain.explainer),
        "scorers": scorers,
        "num_examples_per_scorer_prompt": score.get("examples_per_prompt"),
        "seed": sample.get("seed"),
    }
    return _known(config)


def _known(d: dict) -> dict:
    """`d` without its None values, nested dicts included."""
    return {k: _known(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
