"""`autointerp batch` end to end with real parts: the embedded SmolLM2 through TransformerLens, the shipped SAE,
a real SQLite file, llama.cpp in-process. Kill -9 during each stage then resume must equal an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest
from helpers.batch_config import write_config
from helpers.cli import batch_cmd, invoke_cli
from helpers.databases import results, rows


def test_an_uninterrupted_run_caches_explains_scores_and_says_how_to_browse(reference):
    db, _, run = reference
    out = results(db)
    assert len(out["chunks"]) == 4 and len(out["explanations"]) == 2
    assert {(s[0], s[2], s[3]) for s in out["scores"]} == {
        (x[0], scorer, c) for x in out["explanations"] for scorer in ("detection", "embedding") for c in (0, 1)
    }
    assert "browse the results" in run.stderr and f"autointerp report {db}" in run.stderr
    hints = run.stderr[run.stderr.index("browse the results") :]
    assert hints.index(f"autointerp-tui {db}") < hints.index(f"autointerp report {db}")  # the TUI named first
    # Piped, progress comes as plain lines (none of rich's bars dumped at the end), each stage closing with one.
    for line in ("cache: 8,192/8,192 tokens (100%)", "explain: 2/2 latents (100%)", "score: 2/2 latents (100%)"):
        assert line in run.stderr, line
    assert "ETA done" in run.stderr and "━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 8192/8192" not in run.stderr
    ((status, n_latents),) = rows(db, "select status, n_latents from runs")
    assert status == "done" and n_latents == 2
    stages = {r[0]: r[1:] for r in rows(db, "select stage, done, total, ended_at from progress")}
    assert stages["cache"][:2] == (8192, 8192) and stages["explain"][:2] == (2, 2) and stages["score"][:2] == (2, 2)
    assert all(s[2] is not None for s in stages.values())  # every stage recorded its end
    events = rows(db, "select run, stage, kind from events where kind in ('start', 'end') order by id")
    assert events == [(1, stage, kind) for stage in ("cache", "explain", "score") for kind in ("start", "end")]
    # The list's sort columns were packed when the statistics and the score stage ended, and are current.
    from autointerp.store.columns import read_score_column, read_stat_column

    with sqlite3.connect(db) as c:
        names = [r[0] for r in c.execute("select name from columns order by name")]
        assert "scores/default/detection/balanced_accuracy" in names and "scores/default/embedding/auroc" in names
        latents, values = read_score_column(c, "default", "detection", "balanced_accuracy")
        want = c.execute(
            "select latent, balanced_accuracy from scores where scorer = 'detection' and control = 0 order by latent"
        ).fetchall()
        assert [(int(a), float(b)) for a, b in zip(latents, values)] == want
        fingerprint = c.execute("select fingerprint from stages where name = 'cache.stats'").fetchone()[0]
        assert read_stat_column(c, "max_act", fingerprint) is not None


def test_dry_run_counts_the_calls_the_run_makes(reference):
    db, plan, _ = reference
    stages = plan["llm_stages"]
    assert plan["cache"]["complete"] is False and plan["latents"] == 2
    ((calls, prompt_tokens),) = rows(db, "select sum(n_calls), sum(prompt_tokens) from explanations")
    assert stages["explain"]["calls"] == calls == 2
    ((score_calls, score_tokens),) = rows(
        db, "select sum(n_calls), sum(prompt_tokens) from scores where scorer='detection'"
    )
    assert stages["score/detection"]["calls"] == score_calls == 2 * 2 * 3  # 2 latents x (real, control) x 14/5
    assert stages["score/embedding"]["calls"] == 0
    # Before anything ran the token figure is a rough estimate: within a factor of two of what was used.
    for est, used in (
        (stages["explain"]["prompt_tokens"], prompt_tokens),
        (stages["score/detection"]["prompt_tokens"], score_tokens),
    ):
        assert used / 2 <= est <= used * 2, (est, used)
    # Once the run is done, a dry run has nothing left to do.
    again = json.loads(invoke_cli("batch", str(db.parent / "c.toml"), "--dry-run", "--json").stdout)
    assert again["cache"]["complete"] and all(s["latents"] == 0 for s in again["llm_stages"].values())


STAGE_DONE = {
    "cache": "select count(*) from chunks",
    "explain": "select count(*) from explanations",
    "score": "select count(*) from scores",
}
STAGES = ("cache", "explain", "score")


def kill_once_committed(cfg, db, stage: str) -> None:
    """Start the batch and SIGKILL it from outside as soon as `stage` has committed its first unit of work.

    The score stage is the exception: with the stand-in LLM its two latents (in flight together, their calls
    interleaved) commit ~20 ms apart, closer than a watcher can land a kill between, so that run kills itself
    right after its first latent's commit (AUTOINTERP_KILL_AT, as tests/test_resume.py does everywhere)."""
    if stage == "score":
        env = dict(os.environ, AUTOINTERP_KILL_AT="score:1")
        run = subprocess.run(batch_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        return
    proc = subprocess.Popen(batch_cmd(cfg), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while True:
        assert proc.poll() is None, f"finished before the {stage} stage was seen: {proc.stderr.read()[-2000:]}"
        try:
            if rows(db, STAGE_DONE[stage])[0][0] >= 1:
                break
        except sqlite3.Error:
            pass  # not created yet
        assert time.monotonic() < deadline
        time.sleep(0.01)  # the two explanations commit ~0.3-0.8 s apart with the stand-in
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def killed_in_each_stage(tmp_path_factory):
    """One batch killed during each stage in turn, as a user would (at whatever moment the polling sees a
    commit), each run resuming what the last one left, then run to the end. One chain serves the three tests
    below: each killed process is a real resume of the one before, and the cache and the models are loaded
    once per process instead of once per test. -> (db, {stage: results() when killed there}, final run)"""
    d = tmp_path_factory.mktemp("killed")
    db = d / "k.db"
    cfg = write_config(d / "c.toml", db)
    partial = {}
    for stage in STAGES:
        kill_once_committed(cfg, db, stage)
        partial[stage] = results(db)
    resumed = subprocess.run(batch_cmd(cfg), capture_output=True, text=True)
    return db, partial, resumed


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_during_a_stage_then_resume_equals_the_uninterrupted_run(stage, killed_in_each_stage, reference):
    db, partial, resumed = killed_in_each_stage
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The kill landed inside the stage: some of its work committed, not all of it, nothing of a later stage.
    killed = partial[stage]
    done = {"cache": len(killed["chunks"]), "explain": len(killed["explanations"]), "score": len(killed["scores"])}
    most = {"cache": 4, "explain": 2, "score": 7}  # 4 chunks (then statistics...); 2 explanations; 8 score rows
    assert 1 <= done[stage] <= most[stage], done
    assert all(done[later] == 0 for later in STAGES[STAGES.index(stage) + 1 :]), done
    final = results(db)
    assert final == results(reference[0])
    # What each killed run had committed was kept, not recomputed: same rows, and only one copy of each.
    for table in ("chunks", "explanations", "samples"):
        assert set(killed[table]) <= set(final[table])
    statuses = [r[0] for r in rows(db, "select status from runs order by id")]
    assert statuses == ["running"] * 3 + ["done"]  # the killed runs never finished: a monitor sees stale heartbeats


def test_redo_score_recomputes_only_the_scores(reference, tmp_path):
    import shutil

    db = tmp_path / "r.db"
    shutil.copy(reference[0], db)
    cfg = write_config(tmp_path / "c.toml", db)
    before = rows(db, "select latent, scorer, control, created_at from scores order by 1, 2, 3")
    expl = rows(db, "select latent, created_at, text from explanations order by 1")
    r = subprocess.run(batch_cmd(cfg, "--redo", "score"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    after = rows(db, "select latent, scorer, control, created_at from scores order by 1, 2, 3")
    assert [a[:3] for a in after] == [b[:3] for b in before] and all(a[3] > b[3] for a, b in zip(after, before))
    assert rows(db, "select latent, created_at, text from explanations order by 1") == expl
    assert results(db)["scores"] == results(reference[0])["scores"]  # same seeds, same answers


def test_report_and_exports(reference, tmp_path):
    db = reference[0]
    r = invoke_cli("report", str(db), "--json", "--usd-per-mtok-prompt", "1.5", "--usd-per-mtok-output", "6")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep["scores"]) == {"detection", "embedding"}
    assert rep["scores"]["detection"]["real"]["n_latents"] == rep["scores"]["detection"]["control"]["n_latents"] == 2
    ((pt, ot),) = rows(db, "select sum(prompt_tokens), sum(output_tokens) from explanations")
    ((spt, sot),) = rows(db, "select sum(prompt_tokens), sum(output_tokens) from scores")
    assert rep["tokens"]["explain"]["prompt_tokens"] == pt and rep["tokens"]["score/detection"]["prompt_tokens"] == spt
    assert rep["usd_per_million_latents"] == pytest.approx((pt + spt) / 2 * 1.5 + (ot + sot) / 2 * 6)
    assert set(rep["time"]) == {"cache", "explain", "score"} and all(t["wall_s"] > 0 for t in rep["time"].values())
    text = invoke_cli("report", str(db))
    assert text.returncode == 0 and "random control" in text.stdout and "LLM use per stage" in text.stdout
    info = invoke_cli("info", str(db)).stdout
    assert "run 1       done" in info and "explain 2/2, score 2/2" in info

    hook = rows(db, "select hook from provenance")[0][0]
    r = invoke_cli("export", str(db), "--format", "delphi", "--out", str(tmp_path / "delphi"))
    assert r.returncode == 0, r.stderr
    for latent, text_ in rows(db, "select latent, text from explanations where text is not null"):
        assert json.loads((tmp_path / "delphi" / "explanations" / f"{hook}_latent{latent}.txt").read_text()) == text_
    for latent, scorer, control, n, n_scored in rows(db, "select latent, scorer, control, n, n_scored from scores"):
        folder = scorer + ("_control" if control else "")
        records = json.loads((tmp_path / "delphi" / "scores" / folder / f"{hook}_latent{latent}.txt").read_text())
        # No answer (a failed one, or embedding's: a similarity, no yes/no) is written as none, never as "no".
        assert len(records) == n and sum(rec["prediction"] is None for rec in records) == n - n_scored
        assert all(len(rec["str_tokens"]) == len(rec["activations"]) for rec in records)
        assert all(rec["activating"] == (max(rec["activations"]) > 0) for rec in records if scorer == "detection")
    r = invoke_cli("export", str(db), "--format", "json", "--out", str(tmp_path / "all.json"))
    flat = json.loads((tmp_path / "all.json").read_text())
    assert (
        r.returncode == 0
        and len(flat) == 2
        and set(flat[0]["scores"]) == {"detection", "detection_control", "embedding", "embedding_control"}
    )
    r = invoke_cli("export", str(db), "--format", "csv", "--out", str(tmp_path / "all.csv"))
    lines = (tmp_path / "all.csv").read_text().splitlines()
    assert r.returncode == 0 and len(lines) == 3 and "detection_control.auroc" in lines[0]


@pytest.mark.parametrize("n", [0, 1, 3])
def test_streamed_json_export_writes_the_bytes_of_one_json_dump(n):
    import io

    from autointerp.engine.commands.export.flat import _write_json

    rows = [
        {"latent": i, "scores": {"detection": {"f1": 0.5, "n": 3}}, "explanation": "a\nb", "x": None} for i in range(n)
    ]
    want, got = io.StringIO(), io.StringIO()
    json.dump(rows, want, indent=1)
    assert _write_json(got, iter(rows)) == n
    assert got.getvalue() == want.getvalue()
