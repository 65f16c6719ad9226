"""The delphi export read by delphi's own reader (eai-delphi 0.1.3, `delphi.log.result_analysis`: `load_data`,
`get_agg_metrics`, `log_results`), run as a user would run it on our folder, and its numbers compared with ours: on a
real cache scored through a scripted LLM server (detection and fuzzing with logprobs and some unparseable answers,
embedding, simulation, intruder), and on the synthetic database."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from delphi.log.result_analysis import (  # pip install --no-deps eai-delphi==0.1.3 (README, .ci/run)
    compute_auc,
    compute_classification_metrics,
    compute_confusion,
    get_agg_metrics,
    load_data,
    log_results,
)
from helpers.cli import invoke_cli
from helpers.databases import copy_db, rows
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import explain_and_score, llm_stage_config, score_by_generation

from autointerp.engine.commands.export.delphi import DELPHI_SCORER_NAMES, left_out_because
from autointerp.engine.commands.export.formats import export
from autointerp.engine.config import Config
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.metrics import ExampleOutcome, classification_metrics
from autointerp.engine.interpretation.scorers import SCORERS
from autointerp.store.db import ActivationStore
from autointerp.store.directions import read_vocab
from autointerp.store.runs import RunLog
from autointerp.store.synthetic import make_synthetic_db

SCORED = ("detection", "fuzzing", "embedding", "simulation", "intruder")
LEFT_OUT = ("intruder", "generation")  # outcomes that are groups of windows, written texts
TEXTS = ["And Jesus said unto them, Go into the city.", "Shares in the firm rose 3% on Monday."]
CLASSIFIED = ("detection", "fuzzing", "simulation")  # scorers with a yes/no per window
COUNTS = {"true_positives": "tp", "false_positives": "fp", "true_negatives": "tn", "false_negatives": "fn"}


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


def label_logprobs(labels: list[int], user: str) -> dict:
    """OpenAI logprobs with one slot per label token: P("1") varies by excerpt, so AUROC is defined."""
    content = []
    for i, label in enumerate(labels):
        p1 = 0.05 + 0.9 * ((crc(user) >> i) % 97) / 96
        top = [{"token": "1", "logprob": math.log(p1)}, {"token": "0", "logprob": math.log(1 - p1)}]
        content.append({"token": str(label), "logprob": top[1 - label]["logprob"], "top_logprobs": top})
    return {"content": content}


class Scripted:
    """Answers each prompt in the shape its schema asks, varying by excerpt (detection and fuzzing get every verdict),
    with label logprobs, and an unparseable answer to one labelling prompt in nine (failed outcomes)."""

    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, body, headers):
        props = body.get("response_format", {}).get("json_schema", {}).get("schema", {}).get("properties", {})
        user = body["messages"][-1]["content"]
        if "explanation" in props:
            return reply(body=completion(json.dumps({"explanation": f"scripted explanation {crc(user) % 97}"})))
        if "labels" in props:
            if crc(user) % 9 == 0:
                return reply(body=completion("no labels here"))
            labels = [int(crc(user) % 3 != 0) for _ in range(props["labels"]["minItems"])]
            return reply(body=completion(json.dumps({"labels": labels}), logprobs=label_logprobs(labels, user)))
        if "activations" in props:
            n = props["activations"]["minItems"]
            values = [(crc(user) + 7 * i) % 11 if (crc(user) >> i) % 4 == 0 else 0 for i in range(n)]
            return reply(body=completion(json.dumps({"activations": values})))
        if "intruder" in props:
            return reply(body=completion(json.dumps({"intruder": 1 + crc(user) % len(props["intruder"]["enum"])})))
        if "texts" in props:
            return reply(body=completion(json.dumps({"texts": TEXTS})))
        raise AssertionError(f"unexpected prompt schema {props}")


@pytest.fixture(scope="module")
def scored(tmp_path_factory, real_cache_db, subject_model):
    """Four latents of the real cache explained and scored by SCORED (real and control) through the scripted server,
    one of them also by generation (its texts run through the subject model), with the run's config recorded as a
    batch run records it -> (db, cfg)."""
    db = copy_db(real_cache_db, tmp_path_factory.mktemp("delphi") / "d.db")
    with fake_server(Scripted()) as fake:
        cfg = llm_stage_config(db, [fake.url], scorers=SCORED, max_concurrency=8, top_logprobs=5)
        cfg.score.simulation_examples = 4
        cfg.score.intruder_group = 2
        latents = explain_and_score(cfg, "top:4")
        score_by_generation(cfg, db, latents[:1], subject_model, len(TEXTS))
    run = RunLog(db, argv=["batch"], selection="top:4", config=dataclasses.asdict(cfg))
    run.finish("done", "done")
    return db, cfg


@pytest.fixture(scope="module")
def exported(scored, tmp_path_factory):
    """The export, and delphi's load_data over it -> (out, summary, module, latent_df, counts)."""
    db, _ = scored
    out = tmp_path_factory.mktemp("delphi-out") / "results"
    summary = export(Config(db=str(db)), "delphi", out)
    module = rows(db, "select hook from provenance")[0][0]
    latent_df, counts = load_data(out / "scores", [module])
    return out, summary, module, latent_df, counts


def score_rows(db: Path) -> list[dict]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select * from scores order by latent, scorer, control")]


def folder(scorer: str, control: int) -> str:
    return DELPHI_SCORER_NAMES.get(scorer, scorer) + ("_control" if control else "")


def outcomes_of(r: dict) -> list[ExampleOutcome]:
    return [
        ExampleOutcome(o["label"], o["decile"], o["prediction"], o["probability"], o["failed"])
        for o in json.loads(r["outcomes"])
    ]


def assert_same(delphi_value, ours, what):
    """delphi's value where ours is defined; where ours is undefined (None), delphi's formulas give 0."""
    if ours is None:
        assert delphi_value == 0, what
    else:
        assert delphi_value == pytest.approx(ours, abs=1e-12), what


def test_delphi_reads_the_export_and_its_per_latent_numbers_are_ours(scored, exported):
    db, _ = scored
    out, summary, module, latent_df, counts = exported
    assert set(latent_df.score_type) == {
        folder(s, c) for s in ("detection", "fuzzing", "embedding", "simulation") for c in (0, 1)
    }
    assert "fuzzing" not in set(latent_df.score_type)  # delphi's name for the scorer: log_results(..., ["fuzz"])
    checked = 0
    for r in score_rows(db):
        if r["scorer"] in LEFT_OUT:
            continue
        mine = latent_df[
            (latent_df.score_type == folder(r["scorer"], r["control"])) & (latent_df.latent_idx == r["latent"])
        ]
        assert len(mine) == r["n"]
        conf = compute_confusion(mine)
        if r["scorer"] in CLASSIFIED:
            assert {k: int(conf[k]) for k in COUNTS} == {k: r[v] for k, v in COUNTS.items()}
            assert conf["total_examples"] == r["n_scored"] == r["n"] - r["n_failed"]
            m = compute_classification_metrics(conf)
            assert_same(m["accuracy"], r["balanced_accuracy"], "balanced accuracy")
            for metric in ("precision", "recall"):
                assert_same(m[metric], r[metric], metric)
            assert_same(m["f1_score"], r["f1"], "f1")
        else:  # embedding: no yes/no, so nothing in delphi's confusion matrix, never an invented "no"
            assert conf["total_examples"] == 0 and mine.prediction.isna().all() and mine.correct.isna().all()
        if r["auroc"] is not None:
            assert compute_auc(mine) == pytest.approx(r["auroc"], abs=1e-12)
        checked += 1
    assert checked > 12
    assert summary["left_out"] == {name: left_out_because(SCORERS[name].meta) for name in LEFT_OUT}
    assert not any((out / "scores" / f"{name}{side}").exists() for name in LEFT_OUT for side in ("", "_control"))


def test_delphi_aggregates_equal_ours_pooled_over_the_same_rows_and_its_means_equal_our_report(scored, exported):
    db, _ = scored
    _, _, _, latent_df, counts = exported
    agg = get_agg_metrics(latent_df, counts).set_index("score_type")
    report = json.loads(invoke_cli("report", str(db), "--json").stdout)["scores"]
    by_side: dict[tuple[str, int], list[dict]] = {}
    for r in score_rows(db):
        by_side.setdefault((r["scorer"], r["control"]), []).append(r)
    for (scorer, control), side in by_side.items():
        if scorer in LEFT_OUT:
            continue
        a = agg.loc[folder(scorer, control)]
        pooled = classification_metrics([o for r in side for o in outcomes_of(r)])  # delphi pools every example
        if scorer in CLASSIFIED:
            assert {k: int(a[k]) for k in COUNTS} == {k: pooled[v] for k, v in COUNTS.items()}
            assert a["accuracy"] == pytest.approx(pooled["balanced_accuracy"])
            assert a["f1_score"] == pytest.approx(pooled["f1"]) and a["precision"] == pytest.approx(pooled["precision"])
            # Our report averages per latent: the mean of delphi's per-latent numbers over the latents where ours
            # are defined is the report's mean.
            per_latent = [
                compute_classification_metrics(compute_confusion(g))
                for _, g in latent_df[latent_df.score_type == folder(scorer, control)].groupby("latent_idx")
            ]
            ours = report[scorer]["control" if control else "real"]["balanced_accuracy"]
            defined = [m["accuracy"] for m, r in zip(per_latent, side) if r["balanced_accuracy"] is not None]
            assert ours["n"] == len(defined) and ours["mean"] == pytest.approx(float(np.mean(defined)))
        else:
            assert a["total_examples"] == 0
        assert a["auc"] == pytest.approx(pooled["auroc"])


def test_records_hold_the_windows_deciles_and_answers_as_delphi_writes_them(scored, exported):
    db, cfg = scored
    out, _, module, _, _ = exported
    with ActivationStore.open(db, readonly=True) as store:
        vocab = read_vocab(store.db)
        interp = Interpreter(cfg, store, None)
        try:
            for r in score_rows(db):
                if r["scorer"] in LEFT_OUT:
                    continue
                path = out / "scores" / folder(r["scorer"], r["control"]) / f"{module}_latent{r['latent']}.txt"
                records, outcomes = json.loads(path.read_text()), json.loads(r["outcomes"])
                windows = interp.queries.fetch(interp.queries.activating(r["latent"]), [o["window"] for o in outcomes])
                for rec, o, w in zip(records, outcomes, windows):
                    assert rec["str_tokens"] == [vocab[t] for t in w.tokens]  # each id decoded alone, as delphi's
                    assert rec["activations"] == [float(a) for a in w.acts]
                    assert rec["activating"] == bool(o["label"])
                    # delphi's quantile: 0 = strongest decile; ours 1 = weakest of 10
                    assert rec["distance"] == (10 - o["decile"] if o["label"] else -1)
                    if o["failed"] or o["prediction"] is None:  # no answer: none written, none counted wrong
                        assert rec["prediction"] is None and rec["correct"] is None
                    else:
                        assert rec["prediction"] == bool(o["prediction"])
                        assert rec["correct"] == (o["prediction"] == o["label"])
                    assert rec["probability"] == (None if o["failed"] else o["probability"])
        finally:
            interp.close()
    assert any(o["failed"] for r in score_rows(db) for o in json.loads(r["outcomes"]))  # the failures were exported


def test_firing_counts_and_run_config_are_what_the_file_records(scored, exported):
    db, cfg = scored
    out, _, module, latent_df, counts = exported
    want = torch.zeros(rows(db, "select num_latents from provenance")[0][0], dtype=torch.int64)
    for latent, count in rows(db, "select latent, count from latents"):
        want[latent] = count
    assert set(counts) == {module} and torch.equal(counts[module], want)
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["hookpoints"] == [module]
    assert run_config["constructor_cfg"] == {
        "example_ctx_len": 32,
        "min_examples": cfg.sample.min_windows,
        "n_non_activating": cfg.sample.n_non_activating,
    }
    assert run_config["sampler_cfg"]["n_quantiles"] == cfg.sample.n_deciles
    assert run_config["scorers"] == ["detection", "embedding", "fuzz", "simulation"]
    assert run_config["explainer_model"] == "fake"


def test_log_results_runs_on_the_export_and_prints_our_numbers(scored, exported, tmp_path, capsys):
    _, cfg = scored
    out, _, module, latent_df, counts = exported
    log_results(out / "scores", tmp_path / "viz", [module], ["detection", "fuzz"])
    printed = capsys.readouterr().out
    agg = get_agg_metrics(latent_df, counts).set_index("score_type")
    for name in ("detection", "fuzz"):
        section = printed.split(f"--- {name.title()} Metrics ---")[1]
        assert f"Class-Balanced Accuracy: {agg.loc[name, 'accuracy']:.3f}" in section
        assert f"F1 Score: {agg.loc[name, 'f1_score']:.3f}" in section
    assert f"min examples {cfg.sample.min_windows}" in printed  # run_config.json's, from the run's recorded config
    assert {p.name for p in (tmp_path / "viz").iterdir()} >= {
        "detection_accuracy.pdf",
        "fuzz_accuracy.pdf",
        "roc_curve.pdf",
    }


def test_scorers_whose_outcomes_are_not_windows_are_left_out():
    assert left_out_because(SCORERS["generation"].meta) and left_out_because(SCORERS["intervention"].meta)
    assert left_out_because(SCORERS["intruder"].meta)
    for name in ("detection", "fuzzing", "embedding", "surprisal", "simulation"):
        assert left_out_because(SCORERS[name].meta) is None, name


# ---- the synthetic database ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("syn") / "s.db", 40)


def test_synthetic_scores_are_the_metrics_of_their_outcomes(synthetic):
    checked = 0
    for r in score_rows(synthetic):
        m = classification_metrics(outcomes_of(r))
        for key in ("n", "n_scored", "n_failed", "tp", "fp", "tn", "fn", "n_auroc"):
            assert r[key] == m[key], key
        for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc"):
            assert r[key] == pytest.approx(m[key], abs=1e-12) if m[key] is not None else r[key] is None, key
        assert json.loads(r["recall_per_decile"]) == m["recall_per_decile"]
        checked += 1
    assert checked == len(score_rows(synthetic)) > 100


def test_synthetic_export_reads_in_delphi_and_a_row_without_outcomes_gets_no_file(synthetic, tmp_path):
    db = Path(copy_db(synthetic, tmp_path / "s.db"))
    with sqlite3.connect(db) as c:
        latent = c.execute("select min(latent) from scores").fetchone()[0]
        c.execute("update scores set outcomes = '[]' where latent = ? and scorer = 'detection'", [latent])
    out = tmp_path / "out"
    r = invoke_cli("export", str(db), "--format", "delphi", "--out", str(out))
    assert r.returncode == 0, r.stderr
    module = rows(db, "select hook from provenance")[0][0]
    assert not (out / "scores" / "detection" / f"{module}_latent{latent}.txt").exists()
    latent_df, counts = load_data(out / "scores", [module])
    agg = get_agg_metrics(latent_df, counts).set_index("score_type")
    exported = [r for r in score_rows(db) if r["outcomes"] != "[]"]
    for scorer in ("detection", "fuzzing"):
        for control in (0, 1):
            side = [r for r in exported if r["scorer"] == scorer and r["control"] == control]
            assert {k: int(agg.loc[folder(scorer, control), k]) for k in COUNTS} == {
                k: sum(r[v] for r in side) for k, v in COUNTS.items()
            }
    assert latent_df.text.str.len().min() > 0  # every record's str_tokens joined
