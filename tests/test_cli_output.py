"""What the command line prints where nobody watches a terminal: piped reports whole, plain progress lines that keep
coming (and an ETA that keeps moving) while a stage waits, and help that names the TUI's arguments."""

from __future__ import annotations

import io
import re
import time

import pytest
from helpers.cli import run_cli
from rich.console import Console

from autointerp.engine.commands.batch import PlainLines, StageClock
from autointerp.store.synthetic import make_synthetic_db


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory):
    return make_synthetic_db(tmp_path_factory.mktemp("out") / "s.db", 60, explained=1.0, seed=2)


def test_a_piped_report_prints_every_header_and_number_whole(scored_db):
    run = run_cli("report", scored_db)  # stdout is a pipe here
    assert run.returncode == 0, run.stderr
    assert "…" not in run.stdout and "\x1b[" not in run.stdout  # no cut cells, no colour codes
    for header in ("prompt tok/latent", "output tok/latent", "failed calls", "backend s"):
        assert header in run.stdout, header


def test_tui_help_documents_the_database_and_serving():
    run = run_cli("tui", "--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("Usage: autointerp-tui [OPTIONS] [DB]")
    for word in ("DB is the SQLite file", "--serve", "--port", "--rater", "ssh -L"):
        assert word in run.stdout, word


def test_plain_lines_keep_coming_and_the_eta_moves_while_a_stage_waits():
    out = io.StringIO()
    console = Console(file=out, width=200)
    clock = StageClock("explain", "latents", 10, started=time.monotonic() - 10)
    clock.update(0, "")  # 0 done when the run reached the stage
    clock.update(2, "1.0 latents/min")  # then 2 latents in 10 s, then nothing more
    with PlainLines(console, 0.4) as plain:
        plain.clocks.append(clock)
        time.sleep(1.5)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("explain: 2/10 latents (20%)")]
    assert len(lines) >= 2  # steady lines though no latent ended
    etas = [re.search(r"ETA (\d+):(\d\d):(\d\d)", line).groups() for line in lines]
    seconds = [int(h) * 3600 + int(m) * 60 + int(s) for h, m, s in etas]
    assert seconds[0] >= 40 and seconds[-1] > seconds[0]  # 8 left at 5 s each, growing while it waits


def test_info_json_gives_the_numbers_it_prints(scored_db):
    import json
    import sqlite3

    run = run_cli("info", scored_db, "--json", "--top", "3")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    with sqlite3.connect(scored_db) as c:
        ok, failed = c.execute("select count(text), count(*) - count(text) from explanations").fetchone()
        top = [r[0] for r in c.execute("select latent from latents order by count desc limit 3")]
        dead = c.execute("select count(*) from latents where count = 0").fetchone()[0]
    c.close()
    assert [r["latent"] for r in info["top_latents"]] == top and info["dead_latents"] == dead
    assert info["explainers"][0]["explanations"] == ok and info["explainers"][0]["failed"] == failed
    text = run_cli("info", scored_db, "--top", "3").stdout
    assert f"{info['dead_latents']} never fired" in text and f"{info['activations']:,} activations" in text
