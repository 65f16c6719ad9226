"""`autointerp export --format neuronpedia`: the folder Neuronpedia's importer reads, checked against the table
definitions it inserts into, against what its code asks of each file, and against what the database holds.

Neuronpedia publishes no JSON schema for these files: each JSONL line is a row of one of its Postgres tables,
defined in apps/webapp/prisma/schema.prisma (github.com/hijohnnylin/neuronpedia, commit ebb8426fc550). TABLES below
transcribes those columns by hand into JSON schemas that jsonschema checks: the types, which columns take null,
which keys a row must carry (NOT NULL columns without a database default, and the ids Prisma makes client-side),
and no key that is not a column (the importer drops unknown keys silently; Prisma's create refuses them).

What the importer's code asks of the files (file:line at that commit, under apps/webapp/; each is checked below
where it says so):
  R1 app/api/admin/import/route.ts:48: the source's files are read from `v1/<modelId>/<sourceId>/`.
  R2 route.ts:66 -> lib/db/import.ts:33-84: before anything else, every row of config/explanation_model_type,
     explanation_type, explanation_score_model, explanation_score_type and eval_type (.jsonl) is upserted through
     Prisma by `name`; lib/utils/s3.ts:116-127: a missing file throws, an empty one is no rows.
  R3 route.ts:72-141: release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl, each row through Prisma's create
     (every key a column, every required column given); the source set and source are looked up under the
     query's model id (route.ts:104-111, 125-132).
  R4 route.ts:181-201, 206-227; lib/utils/s3.ts:83-107: features/, activations/ (no subfolders) and explanations/
     are listed with one ListObjectsV2 call (at most 1,000 keys) and filtered to `.jsonl.gz`; explanation files
     are named `batch-N.jsonl.gz` (route.ts:217); each is gunzipped (s3.ts:109-114).
  R5 lib/db/import.ts:86-162: a file goes in through `jsonb_to_recordset` with the first line's keys as the column
     list, so every line carries the same keys, and a null overrides a column's default (NOT NULL columns get
     none); explanations of all files are inserted in batches together (route.ts:211-256): their keys agree across
     files. Foreign keys hold (the insert is plain SQL: ON CONFLICT DO NOTHING skips duplicates, not bad
     references).
  R6 app/api/admin/import-file/route.ts:10-24: explanation_scores/ files load one at a time through
     `importJsonlString` with tableName "ExplanationScore" (as R5).
"""

import gzip
import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from autointerp.engine.commands.export.common import ExportError
from autointerp.engine.commands.export.neuronpedia import export_neuronpedia
from autointerp.engine.config import resolve_config
from autointerp.engine.interpretation.scorers import primary_metric
from autointerp.store.db import ActivationStore
from autointerp.store.directions import read_vocab
from autointerp.store.synthetic import make_synthetic_db

N_LATENTS, BATCH = 200, 48

# "name:Type" NOT NULL with a default (key optional, never null); "name:Type?" nullable; "name:Type!" required.
# Each from its `model` block in apps/webapp/prisma/schema.prisma at ebb8426fc550 (the line is in the comment).
TABLES = {
    # Neuron: schema.prisma:734-797
    "Neuron": "modelId:String! layer:String! index:String! sourceSetName:String? creatorId:String? createdAt:DateTime "
    "maxActApprox:Float? hasVector:Boolean vector:Float[] vectorLabel:String? vectorDefaultSteerStrength:Float? "
    "hookName:String? topkCosSimIndices:Int[] topkCosSimValues:Float[] neuron_alignment_indices:Int[] "
    "neuron_alignment_values:Float[] neuron_alignment_l1:Float[] correlated_neurons_indices:Int[] "
    "correlated_neurons_pearson:Float[] correlated_neurons_l1:Float[] correlated_features_indices:Int[] "
    "correlated_features_pearson:Float[] correlated_features_l1:Float[] neg_str:String[] neg_values:Float[] "
    "pos_str:String[] pos_values:Float[] frac_nonzero:Float freq_hist_data_bar_heights:Float[] "
    "freq_hist_data_bar_values:Float[] logits_hist_data_bar_heights:Float[] logits_hist_data_bar_values:Float[] "
    "decoder_weights_dist:Float[] umap_cluster:Int? umap_log_feature_sparsity:Float? umap_x:Float? umap_y:Float?",
    # Activation: schema.prisma:1012-1052
    "Activation": "id:Cuid! tokens:String[]! dataIndex:String? index:String! layer:String! modelId:String! "
    "dataSource:String? maxValue:Float! maxValueTokenIndex:Int! minValue:Float! values:Float[]! dfaValues:Float[] "
    "dfaTargetIndex:Int? dfaMaxValue:Float? zQIndices:Int[] zKIndices:Int[] zValues:Float[] creatorId:String! "
    "createdAt:DateTime lossValues:Float[] logitContributions:String? binMin:Float? binMax:Float? "
    "binContains:Float? qualifyingTokenIndex:Int?",
    # Explanation: schema.prisma:799-849
    "Explanation": "id:Cuid! modelId:String! layer:String! index:String! description:String! authorId:String! "
    "triggeredByUserId:String? notes:String? scoreV1:Float scoreV2:Float? umap_x:Float? umap_y:Float? "
    "umap_cluster:Int? umap_log_feature_sparsity:Float? typeName:String? explanationModelName:String? "
    "createdAt:DateTime updatedAt:DateTime",
    # ExplanationScore: schema.prisma:908-931
    "ExplanationScore": "id:Cuid! initiatedByUserId:String! value:Float! explanationId:String! "
    "explanationScoreTypeName:String! explanationScoreModelName:String! jsonDetails:String createdAt:DateTime",
    # Model: schema.prisma:361-420
    "Model": "id:ModelId! displayNameShort:String displayName:String creatorId:String! tlensId:String? "
    "openRouterId:String? dimension:Int? thinking:Boolean visibility:Visibility defaultSourceSetName:String? "
    "defaultSourceId:String? defaultGraphSourceSetName:String? inferenceEnabled:Boolean instruct:Boolean "
    "layers:Int! neuronsPerLayer:Int! createdAt:DateTime owner:String! updatedAt:DateTime website:String?",
    # Source: schema.prisma:556-605
    "Source": "id:String! modelId:String! hasDashboards:Boolean inferenceEnabled:Boolean saelensConfig:Json? "
    "saelensRelease:String? "
    "saelensSaeId:String? hfRepoId:String? hfFolderId:String? visibility:Visibility defaultOfModelId:String? "
    "setName:String! creatorId:String! hasUmap:Boolean hasUmapLogSparsity:Boolean hasUmapClusters:Boolean "
    "num_prompts:Int? num_tokens_in_prompt:Int? dataset:String? notes:String? cosSimMatchModelId:String? "
    "cosSimMatchSourceId:String? createdAt:DateTime",
    # SourceSet: schema.prisma:607-660
    "SourceSet": "modelId:String! name:String! hasDashboards:Boolean allowInferenceSearch:Boolean "
    "visibility:Visibility description:String! type:String creatorName:String! urls:String[] creatorEmail:String? "
    "creatorId:String! releaseName:String? hasGraphs:Boolean graphEnabled:Boolean similarityMatrixEnabled:Boolean "
    "defaultOfModelId:String? defaultGraphModelId:String? defaultRange:Int defaultShowBreaks:Boolean "
    "showDfa:Boolean showCorrelated:Boolean showHeadAttribution:Boolean showUmap:Boolean createdAt:DateTime",
    # SourceRelease: schema.prisma:662-692
    "SourceRelease": "name:String! visibility:Visibility isNewUi:Boolean featured:Boolean description:String! "
    "descriptionShort:String? urls:String[] creatorEmail:String? creatorName:String! creatorNameShort:String? "
    "creatorId:String! defaultSourceSetName:String? defaultSourceId:String? defaultUmapSourceIds:String[] "
    "createdAt:DateTime",
    # ExplanationType: schema.prisma:879-906
    "ExplanationType": "name:String! displayName:String! description:String! featured:Boolean isAttention:Boolean "
    "explainerModelSettingsId:String? settings:String? url:String? creatorName:String! creatorId:String! "
    "createdAt:DateTime updatedAt:DateTime",
    # ExplanationModelType: schema.prisma:862-877
    "ExplanationModelType": "name:String! displayName:String! description:String! featured:Boolean "
    "openRouterModelId:String? url:String? creatorName:String! createdAt:DateTime updatedAt:DateTime",
    # ExplanationScoreType: schema.prisma:933-956
    "ExplanationScoreType": "name:String! displayName:String! description:String! featured:Boolean "
    "isAttention:Boolean scoreDescription:String? scorerModel:String? settings:String? url:String? "
    "creatorName:String! creatorId:String! createdAt:DateTime updatedAt:DateTime",
    # ExplanationScoreModel: schema.prisma:958-974
    "ExplanationScoreModel": "name:String! displayName:String! description:String! featured:Boolean "
    "openRouterModelId:String? url:String? creatorName:String! createdAt:DateTime updatedAt:DateTime",
    # EvalType: schema.prisma:715-732
    "EvalType": "name:String! displayName:String! description:String! longerDescription:String outputSchema:Json! "
    "featured:Boolean url:String? createdAt:DateTime updatedAt:DateTime",
}
SCALARS = {
    "String": {"type": "string"},
    "Float": {"type": "number"},
    "Int": {"type": "integer"},
    "Boolean": {"type": "boolean"},
    "DateTime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"},
    "Cuid": {"type": "string", "pattern": r"^c[^\s-]{8,}$"},  # zod's .cuid() check in prisma/generated/zod
    "ModelId": {"type": "string", "pattern": r"^[a-zA-Z0-9_-]{1,128}$"},  # ModelSchema's id rule
    "Visibility": {"enum": ["PUBLIC", "UNLISTED", "PRIVATE"]},
    "Json": {},
}
FOLDERS = {
    "features": "Neuron",
    "activations": "Activation",
    "explanations": "Explanation",
    "explanation_scores": "ExplanationScore",
}
METADATA = {"model": "Model", "source": "Source", "sourceset": "SourceSet", "release": "SourceRelease"}
# R2: the config files the importer reads (lib/db/import.ts:34-35, 45, 54-55, 65-66, 76), and their tables.
CONFIG = {
    "explanation_model_type": "ExplanationModelType",
    "explanation_type": "ExplanationType",
    "explanation_score_model": "ExplanationScoreModel",
    "explanation_score_type": "ExplanationScoreType",
    "eval_type": "EvalType",
}
BOT_USER = "clkht01d40000jv08hvalcvly"  # the user every Neuronpedia instance seeds (apps/webapp/prisma/seed.ts:29)
S3_LIST_LIMIT = 1000  # R4: keys one ListObjectsV2 call returns (lib/utils/s3.ts:88-93 makes one per folder)


def table_schema(spec: str) -> dict:
    props, required = {}, []
    for column in spec.split():
        name, kind = column.split(":")
        nullable, must = kind.endswith("?"), kind.endswith("!")
        kind = kind.rstrip("?!")
        one = SCALARS[kind.removesuffix("[]")]
        schema = {"type": "array", "items": one} if kind.endswith("[]") else dict(one)
        props[name] = {"anyOf": [schema, {"type": "null"}]} if nullable else schema
        if must:
            required.append(name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


VALIDATORS = {table: Draft202012Validator(table_schema(spec)) for table, spec in TABLES.items()}


def read_jsonl(path: Path) -> list[dict]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [json.loads(line) for line in data.decode().splitlines()]


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A synthetic database with one failed explanation, one latent marked dead and unexplained (and named as a
    decoder neighbour of another), one latent whose detection metric is undefined, and one whose detection score
    records no scorer model."""
    path = make_synthetic_db(tmp_path_factory.mktemp("np") / "a.db", N_LATENTS, explained=0.9, seed=1)
    with sqlite3.connect(path) as conn:
        explained = sorted(r[0] for r in conn.execute("select latent from explanations"))
        failed, undefined, no_model, near_dead = explained[:4]
        dead = min(set(range(N_LATENTS)) - set(explained))
        conn.execute("update explanations set text = null, error = 'unparsed' where latent = ?", [failed])
        conn.execute("update latents set count = 0 where latent = ?", [dead])
        conn.execute(
            "update scores set balanced_accuracy = null where latent = ? and scorer = 'detection' and control = 0",
            [undefined],
        )
        conn.execute(
            "update scores set model = null where latent = ? and scorer = 'detection' and control = 0", [no_model]
        )
        (near,) = conn.execute("select neighbours from directions where latent = ?", [near_dead]).fetchone()
        near = json.dumps([[dead, 0.99], *json.loads(near)])
        conn.execute("update directions set neighbours = ? where latent = ?", [near, near_dead])
    conn.close()
    return SimpleNamespace(path=path, failed=failed, dead=dead, undefined=undefined, no_model=no_model)


@pytest.fixture(scope="module")
def exported(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "np"
    result = export_neuronpedia(resolve_config(None, db=str(db.path)), out, batch_size=BATCH, show_progress=False)
    source = out / "synthetic" / f"0-autointerp-res-{N_LATENTS}"
    tables = {folder: [] for folder in FOLDERS}
    files = {folder: sorted((source / folder).iterdir()) for folder in FOLDERS}
    for folder, paths in files.items():
        for p in paths:
            tables[folder] += read_jsonl(p)
    return {"out": out, "source": source, "result": result, "files": files, **tables}


def by_latent(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(int(r["index"]), []).append(r)
    return out


def importer_reads(out: Path, model_id: str, source_id: str) -> dict[str, list[dict]]:
    """The rows Neuronpedia's importer reads from `out` (the bucket's `v1/`) for one source, in its order, each
    file checked as its code asks (R1-R6 above); {config file, metadata file or folder: rows}."""
    tables: dict[str, list[dict]] = {}
    for name, table in CONFIG.items():  # R2
        path = out / "config" / f"{name}.jsonl"
        assert path.is_file(), path  # s3.ts:116-127: a missing file stops the import
        rows = [json.loads(line) for line in path.read_text().split("\n") if line]  # s3.ts:126
        for row in rows:
            assert not list(VALIDATORS[table].iter_errors(row)), (name, row)  # Prisma's upsert: columns only
        assert len({r["name"] for r in rows}) == len(rows), name  # upserted by name (import.ts:39, 47, ...)
        tables[name] = rows
    source_dir = out / model_id / source_id  # R1
    for name, table in METADATA.items():  # R3
        rows = read_jsonl(source_dir / f"{name}.jsonl")
        assert len(rows) == 1, name
        assert not list(VALIDATORS[table].iter_errors(rows[0])), (name, rows[0])  # Prisma's create
        tables[name] = rows
    assert tables["model"][0]["id"] == model_id and tables["sourceset"][0]["modelId"] == model_id  # route.ts:106-107
    assert tables["source"][0]["id"] == source_id and tables["source"][0]["modelId"] == model_id  # route.ts:127-128
    written = {p.relative_to(source_dir).as_posix() for p in source_dir.rglob("*") if p.is_file()}
    listed = set()
    for folder, table in FOLDERS.items():  # R4
        files = sorted(p for p in written if p.startswith(f"{folder}/") and p.endswith(".jsonl.gz"))
        assert files and len(files) <= S3_LIST_LIMIT, (folder, len(files))
        assert all(re.fullmatch(rf"{folder}/batch-\d+\.jsonl\.gz", p) for p in files), files  # route.ts:217
        listed |= set(files)
        tables[folder] = []
        for path in files:
            lines = gzip.decompress((source_dir / path).read_bytes()).decode().strip().split("\n")  # s3.ts:109-114
            rows = [json.loads(line) for line in lines if line]
            assert rows, path  # import.ts:121-122 parses the first line for the column list
            assert all(r.keys() == rows[0].keys() for r in rows), path  # R5: every line the same columns
            for r in rows:
                errors = [e.message for e in VALIDATORS[table].iter_errors(r)]
                assert not errors, (path, r, errors)
            tables[folder] += rows
        # R5: explanations of all files go in together; the other folders are one insert per file (checked above).
        assert folder != "explanations" or all(r.keys() == tables[folder][0].keys() for r in tables[folder])
    assert written == listed | {f"{name}.jsonl" for name in METADATA}  # nothing written that the importer skips
    return tables


def test_the_importer_reads_every_file_it_asks_for_as_rows_of_its_tables(exported):
    names = {p.name for p in exported["out"].iterdir()}
    assert names == {"config", "synthetic"}, names  # the bucket's v1/: the config folder and one model folder
    assert {p.name for p in (exported["out"] / "config").iterdir()} == {f"{n}.jsonl" for n in CONFIG}
    tables = importer_reads(exported["out"], "synthetic", f"0-autointerp-res-{N_LATENTS}")
    for folder in FOLDERS:
        assert tables[folder] == exported[folder], folder
    # Rows for the names our rows use; autointerp has no evaluations (table Eval), so no EvalType rows.
    for name in ("explanation_model_type", "explanation_type", "explanation_score_model", "explanation_score_type"):
        assert tables[name], name
    assert tables["eval_type"] == []


def test_batches_are_bounded_and_every_reference_resolves(exported):
    features = exported["features"]
    sizes = [len(read_jsonl(p)) for p in exported["files"]["features"]]
    assert max(sizes) == BATCH and sum(sizes) == len(features) == exported["result"]["latents"]
    assert len(sizes) == -(-len(features) // BATCH)
    keys = {(f["modelId"], f["layer"], f["index"]) for f in features}
    assert len(keys) == len(features)  # Neuron's unique key
    for folder in ("activations", "explanations"):
        assert {(r["modelId"], r["layer"], r["index"]) for r in exported[folder]} <= keys, folder
    ids = [r["id"] for folder in ("activations", "explanations", "explanation_scores") for r in exported[folder]]
    assert len(ids) == len(set(ids))
    config = {name: {r["name"] for r in read_jsonl(exported["out"] / "config" / f"{name}.jsonl")} for name in CONFIG}
    explanation_ids = {e["id"] for e in exported["explanations"]}
    assert {e["typeName"] for e in exported["explanations"]} <= config["explanation_type"]
    assert {e["explanationModelName"] for e in exported["explanations"]} <= config["explanation_model_type"]
    for s in exported["explanation_scores"]:
        assert s["explanationId"] in explanation_ids
        assert s["explanationScoreTypeName"] in config["explanation_score_type"]
        assert s["explanationScoreModelName"] in config["explanation_score_model"]
    (source,) = read_jsonl(exported["source"] / "source.jsonl")
    (sourceset,) = read_jsonl(exported["source"] / "sourceset.jsonl")
    (model,) = read_jsonl(exported["source"] / "model.jsonl")
    (release,) = read_jsonl(exported["source"] / "release.jsonl")
    assert {f["layer"] for f in features} == {source["id"]} and source["setName"] == sourceset["name"]
    assert source["id"].startswith("0-") and source["id"][2:] == sourceset["name"]  # `<layer>-<source set>`
    assert {f["modelId"] for f in features} == {model["id"], source["modelId"], sourceset["modelId"]}
    assert {f["sourceSetName"] for f in features} == {sourceset["name"]}  # Neuron -> SourceSet (schema.prisma:741)
    assert sourceset["releaseName"] == release["name"]  # SourceSet -> SourceRelease (schema.prisma:627)
    # Every creator, author and initiator is the seeded bot user (the User foreign keys).
    users = {
        r[k]
        for folder in FOLDERS
        for r in exported[folder]
        for k in ("creatorId", "authorId", "initiatedByUserId")
        if k in r
    }
    users |= {r["creatorId"] for r in (release, model, sourceset, source)}
    users |= {
        r["creatorId"]
        for name in CONFIG
        for r in read_jsonl(exported["out"] / "config" / f"{name}.jsonl")
        if "creatorId" in r
    }
    assert users == {BOT_USER}


def test_model_and_source_say_what_the_cache_holds(db, exported):
    (model,) = read_jsonl(exported["source"] / "model.jsonl")
    (source,) = read_jsonl(exported["source"] / "source.jsonl")
    (release,) = read_jsonl(exported["source"] / "release.jsonl")
    with ActivationStore.open(db.path, readonly=True) as store:
        prov = store.provenance
        window = json.loads(prov["config"])["window_len"]
        n_windows = store.n_sequences() * -(-int(prov["seq_len"]) // window)
    assert window < int(prov["seq_len"])  # so a window length and a sequence length cannot be confused
    # A Neuronpedia neuron is a row of table Neuron: one per latent, so the coder's width, not the hook's.
    assert model["neuronsPerLayer"] == N_LATENTS != int(prov["d_in"])
    # Each Activation row is one window of window_len tokens: the dashboard's prompts are the windows.
    assert {len(a["tokens"]) for a in exported["activations"]} == {window}
    assert source["num_tokens_in_prompt"] == window and source["num_prompts"] == n_windows
    assert release["name"] == f"synthetic--autointerp-res-{N_LATENTS}"


def test_names_are_options_and_the_release_is_per_model(db, exported, tmp_path):
    """Another model id gives another release (SourceRelease.name is global, schema.prisma:663), other source
    folders and other row ids (the same cache imported under two names is two sets of rows)."""
    cfg = resolve_config(None, db=str(db.path))
    out = tmp_path / "np"
    export_neuronpedia(cfg, out, model_id="gpt2-small", source_set="my-sae", batch_size=BATCH, show_progress=False)
    assert {p.name for p in out.iterdir()} == {"config", "gpt2-small"}
    tables = importer_reads(out, "gpt2-small", "0-my-sae")
    (release,) = tables["release"]
    assert release["name"] == "gpt2-small--my-sae" == tables["sourceset"][0]["releaseName"]
    assert {(f["modelId"], f["layer"], f["sourceSetName"]) for f in tables["features"]} == {
        ("gpt2-small", "0-my-sae", "my-sae")
    }
    ids = {r["id"] for folder in ("activations", "explanations", "explanation_scores") for r in tables[folder]}
    mine = {r["id"] for folder in ("activations", "explanations", "explanation_scores") for r in exported[folder]}
    assert len(ids) == len(mine) and not ids & mine
    # Only the model changes: a source set of the same name on another model is another release.
    other = tmp_path / "other"
    export_neuronpedia(cfg, other, model_id="gpt2-medium", source_set="my-sae", show_progress=False)
    (other_release,) = read_jsonl(other / "gpt2-medium" / "0-my-sae" / "release.jsonl")
    assert other_release["name"] == "gpt2-medium--my-sae" != release["name"]
    # Names Neuronpedia's rules refuse are refused before anything is written.
    for bad in (
        {"model_id": "GPT2 Small"},
        {"model_id": "x" * 129},
        {"source_set": "my--sae"},
        {"source_set": "My-SAE"},
        {"source_set": "sae-"},
        {"source_set": "neurons"},
    ):
        with pytest.raises(ExportError, match="Neuronpedia"):
            export_neuronpedia(cfg, tmp_path / "refused", **bad)
    assert not (tmp_path / "refused").exists()


def test_a_wide_export_keeps_every_folder_within_one_listing(db, tmp_path, monkeypatch):
    """R4: the importer lists a folder once (at most 1,000 keys); past that many batches, batches grow instead."""
    from autointerp.engine.commands.export import neuronpedia as mod

    monkeypatch.setattr(mod, "MAX_LISTED_FILES", 3)
    out = tmp_path / "np"
    result = export_neuronpedia(resolve_config(None, db=str(db.path)), out, batch_size=BATCH, show_progress=False)
    source = out / "synthetic" / f"0-autointerp-res-{N_LATENTS}"
    for folder in FOLDERS:
        assert 1 <= len(list((source / folder).iterdir())) <= 3, folder
    assert len(importer_reads(out, "synthetic", f"0-autointerp-res-{N_LATENTS}")["features"]) == result["latents"]


def test_explanations_and_scores_equal_the_database(db, exported):
    conn = sqlite3.connect(db.path)
    texts = dict(conn.execute("select latent, text from explanations where text is not null"))
    models = dict(conn.execute("select latent, model from explanations"))
    exp = by_latent(exported["explanations"])
    assert sorted(exp) == sorted(texts) and db.failed not in exp
    for latent, rows in exp.items():
        assert len(rows) == 1 and rows[0]["description"] == texts[latent]
        assert rows[0]["explanationModelName"] == models[latent]
    by_expl = {e["id"]: int(e["index"]) for e in exported["explanations"]}
    got = {(by_expl[s["explanationId"]], s["explanationScoreTypeName"]): s for s in exported["explanation_scores"]}
    want = 0
    for latent, scorer, model, *metrics in conn.execute(
        "select latent, scorer, model, balanced_accuracy, auroc from scores where control = 0"
    ):
        value = dict(zip(("balanced_accuracy", "auroc"), metrics))[primary_metric(scorer)]
        key = (latent, f"autointerp_{scorer}")
        if latent == db.failed or value is None or model is None:
            # No explanation to hang it on / no value or scorer model the NOT NULL columns could take (an invented
            # model name would become a row of ExplanationScoreModel).
            assert key not in got, key
            continue
        want += 1
        row = got[key]
        assert row["value"] == value
        details = json.loads(row["jsonDetails"])
        (ctrl,) = conn.execute(
            f"select {primary_metric(scorer)}, explanation_latent from scores"
            " where latent = ? and scorer = ? and control = 1",
            [latent, scorer],
        ).fetchall()
        assert details["control_value"] == ctrl[0] and details["control"]["explanation_latent"] == ctrl[1]
        assert details["metric"] == primary_metric(scorer) and details["value"] == value
    assert want == len(got) and exported["result"]["scores_undefined"] == 1
    assert exported["result"]["scores_no_model"] == 1 and (db.no_model, "autointerp_detection") not in got
    assert {s["explanationScoreModelName"] for s in exported["explanation_scores"]} == {"synthetic"}
    conn.close()


def read_vocab_plain(conn) -> dict[int, str]:
    return dict(conn.execute("select id, token from vocab"))


def test_density_maximum_logit_lens_and_neighbours_equal_the_database(db, exported):
    conn = sqlite3.connect(db.path)
    vocab = read_vocab_plain(conn)
    stats = {r[0]: r[1:] for r in conn.execute("select latent, frequency, max_act, count, hist_counts from latents")}
    directions = {r[0]: r[1:] for r in conn.execute("select latent, promoted, suppressed, neighbours from directions")}
    feats = by_latent(exported["features"])
    live = {latent for latent, s in stats.items() if s[2] > 0}
    explained = {r[0] for r in conn.execute("select latent from explanations")}
    assert sorted(feats) == sorted(live | explained) and db.dead not in feats
    dropped = 0
    for latent, (f,) in feats.items():
        freq, max_act, _, hist = stats[latent]
        assert f["frac_nonzero"] == freq and f["maxActApprox"] == max_act
        assert f["freq_hist_data_bar_heights"] == json.loads(hist)
        promoted, suppressed, neighbours = (json.loads(x) for x in directions[latent])
        promoted.sort(key=lambda p: -p[1])
        suppressed.sort(key=lambda p: p[1])
        assert f["pos_str"] == [vocab[t] for t, _ in promoted] and f["pos_values"] == [v for _, v in promoted]
        assert f["neg_str"] == [vocab[t] for t, _ in suppressed] and f["neg_values"] == [v for _, v in suppressed]
        # Only neighbours that are features too: Neuronpedia's cosine-similarity pane links each to its page.
        near = [(i, c) for i, c in neighbours if i in feats]
        assert f["topkCosSimIndices"] == [i for i, _ in near] and f["topkCosSimValues"] == [c for _, c in near]
        dropped += len(neighbours) - len(near)
    assert dropped > 0  # the dead latent, at least, was a neighbour and is not linked
    conn.close()


def test_top_activations_are_the_strongest_windows_as_text(db, exported):
    """Recomputed from the raw activations: the first window of each latent holds its strongest activation,
    with the tokens of that window as vocab text and the latent's value at every token."""
    acts = by_latent(exported["activations"])
    with ActivationStore.open(db.path, readonly=True) as store:
        vocab = read_vocab(store.db)
        seq_len = int(store.provenance["seq_len"])
        window = json.loads(store.provenance["config"])["window_len"]
        for latent in sorted(acts)[::7]:
            positions, values = store.latent_activations(latent)
            rows = acts[latent]
            n_windows = len(np.unique((positions // seq_len) * (seq_len // window) + positions % seq_len // window))
            assert len(rows) == min(20, n_windows)
            assert [r["maxValue"] for r in rows] == sorted((r["maxValue"] for r in rows), reverse=True)
            top = rows[0]
            assert top["maxValue"] == float(values.max())
            # Every window holding the maximum (ties are possible): the exported one must be one of them.
            candidates = []
            for p in positions[values == values.max()]:
                seq, off = divmod(int(p), seq_len)
                start = off // window * window
                tokens = store.sequences([seq])[seq][start : start + window]
                dense = np.zeros(len(tokens), np.float32)
                inside = (positions >= seq * seq_len + start) & (positions < seq * seq_len + start + len(tokens))
                dense[positions[inside] - seq * seq_len - start] = values[inside]
                candidates.append(([vocab[int(t)] for t in tokens], dense.tolist()))
            assert (top["tokens"], top["values"]) in candidates, latent
            assert top["values"][top["maxValueTokenIndex"]] == top["maxValue"] and top["minValue"] == min(top["values"])


def test_a_failed_export_leaves_the_old_folder_and_nothing_else(db, tmp_path, monkeypatch):
    from autointerp.engine.commands.export import neuronpedia as mod

    out = tmp_path / "np"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    calls = {"n": 0}
    real = mod._Writer.activations

    def failing(self, latent):
        calls["n"] += 1
        if calls["n"] > 2 * BATCH:  # after some batch files were written
            raise OSError(28, "No space left on device")
        return real(self, latent)

    monkeypatch.setattr(mod._Writer, "activations", failing)
    with pytest.raises(ExportError, match="No space left on device"):
        export_neuronpedia(resolve_config(None, db=str(db.path)), out, batch_size=BATCH, show_progress=False)
    assert calls["n"] > 2 * BATCH
    assert sorted(p.name for p in tmp_path.iterdir()) == ["np"] and digests(out) == {
        "keep.txt": hashlib.sha256(b"old").hexdigest()
    }


def test_refusals_write_nothing(db, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    cfg = resolve_config(None, db=str(db.path))
    with pytest.raises(ExportError, match="is a file, not a folder"):
        export_neuronpedia(cfg, afile / "np")
    with pytest.raises(ExportError, match="Neuronpedia's layout is a folder"):
        export_neuronpedia(cfg, afile)
    novocab = shutil.copy(db.path, tmp_path / "novocab.db")
    with sqlite3.connect(novocab) as conn:
        conn.execute("delete from vocab")
    conn.close()
    with pytest.raises(ExportError, match="autointerp annotate"):
        export_neuronpedia(resolve_config(None, db=str(novocab)), tmp_path / "np")
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("novocab.db"))  # and its -wal, -shm
    assert afile.read_text() == "x" and left == ["afile"]


def test_cli_end_to_end_gives_the_same_bytes_and_one_error_line(db, tmp_path):
    cli = [sys.executable, "-m", "autointerp.engine.commands.cli", "export", str(db.path), "--format", "neuronpedia"]
    out = tmp_path / "cli"
    r = subprocess.run([*cli, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    live_or_explained = N_LATENTS - 1  # all but the latent marked dead
    assert f"exported {live_or_explained} latents to {out}" in r.stdout
    # The same export in this process: byte for byte the same files (stable ids, gzip without time stamps).
    mine = export_neuronpedia(resolve_config(None, db=str(db.path)), tmp_path / "mine", show_progress=False)
    assert mine["latents"] == live_or_explained and digests(out) == digests(tmp_path / "mine")
    assert len(list((out / "synthetic" / f"0-autointerp-res-{N_LATENTS}" / "features").iterdir())) == 1
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = subprocess.run([*cli, "--out", str(afile / "np")], capture_output=True, text=True)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot write --out"), r.stderr
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "cli", "mine"]


def test_cli_names_options_and_their_refusals(db, tmp_path):
    from helpers.cli import invoke_cli

    cli = ["export", db.path, "--format", "neuronpedia", "--out"]
    r = invoke_cli(*cli, tmp_path / "np", "--np-model-id", "gpt2-small", "--np-source-set", "my-sae")
    assert r.returncode == 0, r.stderr
    assert f"exported {N_LATENTS - 1} latents to {tmp_path / 'np'}" in r.stdout
    assert (tmp_path / "np" / "gpt2-small" / "0-my-sae" / "features").is_dir()
    refusals = {
        ("--np-model-id", "GPT2 Small"): "error: --np-model-id 'GPT2 Small': Neuronpedia model ids are",
        ("--np-source-set", "my--sae"): "error: --np-source-set 'my--sae': Neuronpedia source set names are",
    }
    for option, line in refusals.items():
        r = invoke_cli(*cli, tmp_path / "refused", *option)
        lines = r.stderr.splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith(line), r.stderr
    r = invoke_cli("export", db.path, "--format", "json", "--out", tmp_path / "x.json", "--np-model-id", "gpt2")
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: --format json takes no model_id"), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["np"]
