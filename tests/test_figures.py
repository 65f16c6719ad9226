"""`autointerp report --html/--png`: the figures (engine/commands/report/figures.py) and their files, on synthetic
databases written by the real store code. What a figure shows is checked against what the SQLite file holds,
read here independently (plain SQL and json.loads, not the figures' own queries)."""

from __future__ import annotations

import base64
import errno
import json
import shutil
import sqlite3
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.image import imread

from autointerp.engine.commands.cli import main
from autointerp.engine.commands.report import figures
from autointerp.engine.commands.report import html as report_html
from autointerp.store.db import ActivationStore
from autointerp.store.synthetic import SCORERS, make_synthetic_db

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PRICES = ["--usd-per-mtok-prompt", "0.1", "--usd-per-mtok-output", "0.4"]
EXPLAIN_FAILURES = {7: "LLM answer did not parse: $5 <b>[bold]", 11: "timeout"}  # latent % key == 0 -> reason
SCORE_ERRORS = {("detection", 5): {"parse error": 2, "timeout after 30 s": 1}, ("fuzzing", 3): {"parse error": 1}}


def sql(path: Path, query: str, args=()) -> list[tuple]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        return c.execute(query, args).fetchall()


def edited_copy(src: Path, dst: Path, *statements: tuple) -> Path:
    shutil.copy(src, dst)
    with sqlite3.connect(dst) as conn:
        for statement in statements:
            conn.execute(*statement)
    conn.close()
    return dst


@pytest.fixture(scope="module")
def clean_db(tmp_path_factory) -> Path:
    return make_synthetic_db(tmp_path_factory.mktemp("clean") / "s.db", 300, explained=0.9, seed=1)


@pytest.fixture(scope="module")
def db(clean_db, tmp_path_factory) -> Path:
    """The clean run with failed explanations (two reasons, one with `$` and markup) and failed scorer examples."""
    statements = [
        ("update explanations set text = null, error = ? where latent % ? = 0 and text is not null", [why, k])
        for k, why in EXPLAIN_FAILURES.items()
    ]
    statements += [
        ("update scores set errors = ? where scorer = ? and latent % ? = 0", [json.dumps(errs), scorer, k])
        for (scorer, k), errs in SCORE_ERRORS.items()
    ]
    return edited_copy(clean_db, tmp_path_factory.mktemp("failing") / "f.db", *statements)


@pytest.fixture(scope="module")
def run_data(db):
    with ActivationStore.open(db, readonly=True) as store:
        yield figures.RunData(store, "default", 0.1, 0.4)


@pytest.fixture(scope="module")
def written(db, tmp_path_factory) -> dict:
    """One real `autointerp report --json --html --png` over the failing database."""
    out = tmp_path_factory.mktemp("out")
    html, png = out / "deep" / "report.html", out / "png"
    res = CliRunner().invoke(main, ["report", str(db), "--json", "--html", str(html), "--png", str(png), *PRICES])
    assert res.exit_code == 0, (res.stdout, res.stderr, res.exception)
    return {"html": html, "png": png, "stdout": res.stdout, "stderr": res.stderr, "out": out}


def visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def panel_texts(ax) -> str:
    return " ".join(t.get_text() for t in ax.texts)


# ---- the files ------------------------------------------------------------------------------------------------


def test_pngs_are_whole_and_of_the_figures_size(written, run_data):
    names = sorted(p.name for p in written["png"].iterdir())
    assert names == sorted(f"{name}.png" for name, _, _ in figures.FIGURES) == sorted(report_html.png_names())
    for name, _, build in figures.FIGURES:
        data = (written["png"] / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        pixels = imread(written["png"] / f"{name}.png")
        width, height = build(run_data).get_size_inches() * figures.DPI
        assert pixels.shape[:2] == (round(height), round(width)), name
        assert pixels.std() > 0.01, f"{name} is blank"  # something was drawn, not an empty canvas
    # stdout is still the report, one JSON object; the files written are named on stderr
    assert json.loads(written["stdout"])["scores"].keys() == set(SCORERS)
    assert f"wrote {written['html']}" in written["stderr"].splitlines()


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.links: list[str] = []  # every src and href, whatever the tag

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href"):
                self.links.append(value or "")
                if tag == "img":
                    self.srcs.append(value or "")


def test_html_embeds_each_figure_and_links_nothing_outside(written, db):
    page = written["html"].read_text(encoding="utf-8")
    parser = Images()
    parser.feed(page)
    assert len(parser.srcs) == len(figures.FIGURES)
    prefix = "data:image/png;base64,"
    for src, (name, _, _) in zip(parser.srcs, figures.FIGURES):
        assert src.startswith(prefix)
        png = base64.b64decode(src[len(prefix) :], validate=True)
        assert png.startswith(PNG_SIGNATURE)
        # the same picture as the PNG file written beside it (one rendering serves both outputs)
        assert png == (written["png"] / f"{name}.png").read_bytes()
    assert all(link.startswith(("data:", "#")) for link in parser.links), parser.links
    assert "http" not in "".join(parser.links) and "<script" not in page and "<link" not in page
    # the text report is there too, with database text escaped (the failure reason carries markup)
    assert "scores over latents" in page and "LLM use per stage" in page
    assert "$5 &lt;b&gt;[bold]" in page and "<b>[bold]" not in page
    for (scorer,) in sql(db, "select distinct scorer from scores"):
        assert f"{scorer} " in page


# ---- each figure shows what the file holds ---------------------------------------------------------------------


def test_score_distributions_one_panel_per_scorer_against_the_control(run_data, db):
    fig = figures.score_distributions(run_data)
    axes = visible_axes(fig)
    scorers = [s for (s,) in sql(db, "select distinct scorer from scores order by scorer")]
    assert [ax.get_title().split(":")[0] for ax in axes] == scorers
    for ax, scorer in zip(axes, scorers):
        metric = run_data.scorers()[scorer]
        assert metric in ax.get_title()
        labels = legend_labels(ax)
        assert len(labels) == 2 and labels[0].startswith("explanation") and "control" in labels[1]
        for container, label, control in zip(ax.containers, labels, (0, 1)):
            (n,) = sql(
                db,
                f"select count({metric}) from scores where explainer = 'default' and scorer = ? and control = ?",
                [scorer, control],
            )[0]
            assert sum(bar.get_height() for bar in container) == n > 0
            assert f"n={n:,}" in label


def test_recall_per_decile_is_the_mean_of_the_stored_lists(run_data, db):
    fig = figures.recall_per_decile(run_data)
    axes = visible_axes(fig)
    assert "no recall per decile: embedding" in fig.get_suptitle()  # embedding scores have no recall lists
    assert [ax.get_title() for ax in axes] == ["detection", "fuzzing"]
    for ax in axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {figures.REAL, figures.CONTROL}
        for control, label in ((0, figures.REAL), (1, figures.CONTROL)):
            lists = [
                json.loads(r)
                for (r,) in sql(
                    db,
                    "select recall_per_decile from scores where scorer = ? and control = ?",
                    [ax.get_title(), control],
                )
            ]
            expected = np.nanmean(np.array(lists, dtype=float), axis=0)
            np.testing.assert_allclose(lines[label].get_ydata(), expected, rtol=1e-9)
            np.testing.assert_array_equal(lines[label].get_xdata(), np.arange(1, len(expected) + 1))


def test_failure_bars_are_the_stored_counts(run_data, db):
    fig = figures.failures(run_data)
    explain_ax, score_ax = fig.axes
    expected_explain = dict(sql(db, "select error, count(*) from explanations where text is null group by error"))
    expected_score: Counter = Counter()
    for scorer, blob in sql(db, "select scorer, errors from scores"):
        for why, n in json.loads(blob).items():
            expected_score[f"{scorer}: {why}"] += n
    assert len(expected_explain) == 2 and len(expected_score) == 3  # the planted reasons, so the check means something
    for ax, expected in ((explain_ax, expected_explain), (score_ax, dict(expected_score))):
        labels = [t.get_text().replace(r"\$", "$") for t in ax.get_yticklabels()]
        widths = [bar.get_width() for bar in ax.containers[0]]
        assert dict(zip(labels, widths)) == expected
        assert ax.get_title().endswith(f": {sum(expected.values()):,}")


def test_a_figure_without_data_says_none(clean_db):
    with ActivationStore.open(clean_db, readonly=True) as store:
        fig = figures.failures(figures.RunData(store, "default"))
        money = figures.tokens_and_dollars(figures.RunData(store, "default"))  # no price given
    assert [panel_texts(ax) for ax in fig.axes] == ["none: no failed explanations", "none: no failed scorer examples"]
    assert "none: no price set" in panel_texts(money.axes[1])


def test_tokens_and_dollars_per_stage(run_data, db):
    fig = figures.tokens_and_dollars(run_data)
    tokens_ax, usd_ax = fig.axes
    rows = sql(db, "select stage, sum(prompt_tokens), sum(output_tokens) from progress group by stage order by stage")
    assert [t.get_text() for t in tokens_ax.get_xticklabels()] == [r[0] for r in rows]  # explain then score
    prompt_bars, output_bars = tokens_ax.containers
    assert [b.get_height() for b in prompt_bars] == [r[1] for r in rows]
    assert [b.get_height() for b in output_bars] == [r[2] for r in rows]
    # stacked dollars: prompt tokens x $0.1/M under output tokens x $0.4/M
    tops = [b.get_y() + b.get_height() for b in usd_ax.containers[1]]
    np.testing.assert_allclose(tops, [(p * 0.1 + o * 0.4) / 1e6 for _, p, o in rows])
    assert "0.1/M prompt" in usd_ax.get_title()


def test_explanation_length_counts_every_usable_explanation(run_data, db):
    fig = figures.explanation_length(run_data)
    (ax,) = visible_axes(fig)
    words = [len(t.split()) for (t,) in sql(db, "select text from explanations where text is not null")]
    assert sum(bar.get_height() for bar in ax.containers[0]) == len(words)
    assert f"{len(words):,} explanations" in ax.get_title() and f"mean {np.mean(words):.1f}" in ax.get_title()


def test_activation_density_counts_dead_latents(clean_db, tmp_path):
    # Five latents never fired (count 0) and three have no statistics row at all; the packed columns go, as they
    # would be stale after an edit by hand.
    db = edited_copy(
        clean_db,
        tmp_path / "dead.db",
        ("update latents set count = 0, frequency = 0 where latent < 5",),
        ("delete from latents where latent >= 297",),
        ("delete from columns",),
    )
    with ActivationStore.open(db, readonly=True) as store:
        fig = figures.activation_density(figures.RunData(store, "default"))
    (ax,) = visible_axes(fig)
    (alive,) = sql(db, "select count(*) from latents where frequency > 0")[0]
    (width,) = sql(db, "select num_latents from provenance")[0]
    assert sum(bar.get_height() for bar in ax.patches) == alive
    assert f"{alive:,} latents that fire, {width - alive:,} dead" in fig.get_suptitle()
    assert width - alive == 8


def test_scatter_draws_a_seeded_sample_past_the_limit(run_data, monkeypatch):
    full = figures.score_vs_frequency(run_data)
    n = len(visible_axes(full)[0].collections[0].get_offsets())
    assert n > 100 and "seeded sample" not in visible_axes(full)[0].get_title()
    monkeypatch.setattr(figures, "MAX_SCATTER_POINTS", 100)
    first, second = figures.score_vs_frequency(run_data), figures.score_vs_frequency(run_data)
    for a, b, scorer in zip(visible_axes(first), visible_axes(second), run_data.scorers()):
        points = a.collections[0].get_offsets()
        assert len(points) == 100 and f"100 of {n:,} latents, seeded sample" in a.get_title()
        assert scorer in a.get_title() and any("control" in label for label in legend_labels(a))
        np.testing.assert_array_equal(points, b.collections[0].get_offsets())  # the same sample every time


# ---- refusals ---------------------------------------------------------------------------------------------------


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_refused(args: list[str], folder: Path, needle: str) -> None:
    before = listing(folder)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, (res.stdout, res.stderr, res.exception)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.stderr
    assert res.stdout == ""  # no report printed before the refusal
    assert listing(folder) == before  # nothing written, no temporary file left


def test_unusable_outputs_are_refused_before_any_work(db, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    (tmp_path / "a_folder").mkdir()
    assert_refused(["report", str(db), "--html", str(a_file / "r.html")], tmp_path, "is a file, not a folder")
    assert_refused(["report", str(db), "--html", str(tmp_path / "a_folder")], tmp_path, "is a folder")
    assert_refused(["report", str(db), "--png", str(a_file)], tmp_path, "is a file, not a folder")


def test_a_database_without_scores_is_refused(clean_db, tmp_path):
    db = edited_copy(clean_db, tmp_path / "unscored.db", ("delete from scores",))
    out = tmp_path / "out"  # apart from the database, whose reader leaves SQLite's -wal and -shm files beside it
    out.mkdir()
    assert_refused(
        ["report", str(db), "--html", str(out / "new" / "r.html"), "--png", str(out / "png")], out, "no scores"
    )


def test_a_failed_write_leaves_nothing_behind(db, tmp_path, monkeypatch):
    def full_disk(out, data):
        raise OSError(errno.EACCES, "Permission denied", str(out))

    monkeypatch.setattr(report_html, "_stage_file", full_disk)  # the HTML fails after the PNGs were staged
    args = ["report", str(db), "--html", str(tmp_path / "a" / "b" / "r.html"), "--png", str(tmp_path / "png")]
    assert_refused(args, tmp_path, "Permission denied")
    assert listing(tmp_path) == []  # neither the PNG folder nor the HTML file's new folders
