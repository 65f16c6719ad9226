"""The detail pane's evidence (why a score is what it is), exact activation values, the per-window heat scale, the
two-column logit-lens table and the pane's layout, on a real cache scored through a scripted LLM server (so every
outcome, sample and detail read back is a row the real scoring code wrote)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers.databases import copy_db
from helpers.fake_llm import completion, fake_server, reply
from helpers.llm_stage import explain_and_score, llm_stage_config, score_by_generation, share_subject
from helpers.tui import until as wait_until
from textual.app import App, ComposeResult

from autointerp.engine.interpretation.examples import with_marks
from autointerp.engine.interpretation.interpret import Interpreter
from autointerp.engine.interpretation.scorers import SCORERS
from autointerp.engine.interpretation.scorers.simulation import token_lines
from autointerp.store.browse import CHECK_THREADS_ENV, Browser
from autointerp.store.db import ActivationStore
from autointerp.store.evidence import VERDICTS
from autointerp.store.scorer_meta import read_scorers
from autointerp.store.views import LatentDetail, tokens_as_text
from autointerp.tui.detail import LatentDetailView, lens_table
from autointerp.tui.evidence import ValuesScreen, evidence_text
from autointerp.tui.heatmap import COLOUR_STYLES, visible

SCORED = ("detection", "fuzzing", "simulation", "intruder")
# Generation's texts, as the scripted LLM writes them: the empty one tokenises to nothing (a failed outcome whose text
# is kept), the others are run through the subject model and fire the latent or not.
TEXTS = ["And Jesus said unto them, Go into the city.", "Shares in the firm rose 3% on Monday.", "", "zzzz qqqq"]


def crc(text: str) -> int:
    return zlib.crc32(text.encode())


class Scripted:
    """Answers every prompt in the shape its schema asks, with answers that vary by excerpt (so detection and fuzzing
    get all four verdicts) and records simulation's answers by the token lines it was shown."""

    def __init__(self):
        self.simulated: dict[str, list[int]] = {}  # the user message -> the activations answered
        self.labelled: list[str] = []  # every detection / fuzzing prompt's user message
        self.lock = threading.Lock()

    def __call__(self, body, headers):
        props = body.get("response_format", {}).get("json_schema", {}).get("schema", {}).get("properties", {})
        user = body["messages"][-1]["content"]
        if "explanation" in props:
            answer: dict = {"explanation": f"scripted explanation {crc(user) % 97}"}
        elif "labels" in props:
            answer = {"labels": [int(crc(user) % 3 != 0) for _ in range(props["labels"]["minItems"])]}
            with self.lock:
                self.labelled.append(user)
        elif "activations" in props:
            n = props["activations"]["minItems"]
            values = [(crc(user) + 7 * i) % 11 if (crc(user) >> i) % 4 == 0 else 0 for i in range(n)]
            with self.lock:
                self.simulated[user] = values
            answer = {"activations": values}
        elif "texts" in props:
            answer = {"texts": TEXTS}
        elif "intruder" in props:
            answer = {"intruder": 1 + crc(user) % len(props["intruder"]["enum"])}
        else:
            raise AssertionError(f"unexpected prompt schema {props}")
        return reply(body=completion(json.dumps(answer)))


@pytest.fixture(scope="module")
def scored(tmp_path_factory, real_cache_db, subject_model):
    """Two latents of the real cache explained and scored by four scorers (real and control), one of them also by
    generation (the session's subject model runs its texts) -> (db, latents, the scripted server)."""
    db = copy_db(real_cache_db, tmp_path_factory.mktemp("ev") / "e.db")
    script = Scripted()
    with fake_server(script) as fake:
        cfg = llm_stage_config(db, [fake.url], scorers=SCORED, max_concurrency=8)
        cfg.score.simulation_examples = 4
        cfg.score.intruder_group = 2
        latents = explain_and_score(cfg, "top:2")
        score_by_generation(cfg, db, latents[:1], subject_model, len(TEXTS))
    return db, latents, script


@pytest.fixture(scope="module")
def engine_examples(scored):
    """(latent, windows) -> the engine's own Examples of those windows (its token texts: what prompts showed)."""
    db = scored[0]
    with ActivationStore.open(db, readonly=True) as store:
        interp = Interpreter(llm_stage_config(db, ["http://unused"]), store, None)
        try:
            yield lambda latent, windows: {e.window: e for e in interp.examples(latent, windows)}
        finally:
            interp.close()


def rows(db: Path, sql: str, args=()) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(sql, args).fetchall()


def score_row(db: Path, latent: int, scorer: str, control: int = 0) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        c.row_factory = sqlite3.Row
        r = c.execute(
            "select * from scores where latent = ? and explainer = 'default' and scorer = ? and control = ?",
            [latent, scorer, control],
        ).fetchone()
    return dict(r)


def test_the_evidence_reads_what_each_scorer_recorded(scored):
    db = scored[0]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        assert read_scorers(c) == {name: SCORERS[name].meta for name in read_scorers(c)} != {}


def test_verdicts_windows_sources_and_activations_are_the_stored_ones(scored):
    db, latents, _ = scored
    b = Browser.open(db)
    with ActivationStore.open(db, readonly=True) as store:
        interp = Interpreter(llm_stage_config(db, ["http://unused"]), store, None)
        try:
            for latent in latents:
                samples = {
                    w: (role, src)
                    for w, role, src in rows(db, "select window, role, source from samples where latent = ?", [latent])
                }
                for scorer in SCORED:
                    ev = b.evidence(latent, "default", scorer)
                    for side, control in ((ev.real, 0), (ev.control, 1)):
                        assert side is not None, (latent, scorer, control)
                        row = score_row(db, latent, scorer, control)
                        counts = side.verdict_counts()
                        assert [counts[VERDICTS[k]] for k in ((1, 1), (0, 1), (0, 0), (1, 0))] == [
                            row["tp"],
                            row["fp"],
                            row["tn"],
                            row["fn"],
                        ]
                        assert counts["failed"] == row["n_failed"]
                        stored = json.loads(row["outcomes"])
                        assert [ex.window for ex in side.examples] == [o["window"] for o in stored]
                        assert side.explanation == row["explanation"]
                        for ex in side.examples:
                            assert (ex.role, ex.source) == samples[ex.window]
                        # tokens and activations as the engine reads the same windows (its own code path)
                        engine = {e.window: e for e in interp.examples(latent, [ex.window for ex in side.examples])}
                        for ex in side.examples:
                            assert len(ex.tokens) == len(engine[ex.window].tokens)
                            np.testing.assert_array_equal(ex.acts, engine[ex.window].acts)
                            assert (ex.decile > 0) == (ex.max_act > 0)  # held-out activating windows fire
                    # the real and control rows score the same prepared excerpts
                    assert sorted(e.window for e in ev.real.examples) == sorted(e.window for e in ev.control.examples)
        finally:
            interp.close()
            b.close()


def test_simulation_peaks_and_correlation_are_the_scripted_answers(scored, engine_examples):
    db, latents, script = scored
    b = Browser.open(db)
    try:
        for latent in latents:
            ev = b.evidence(latent, "default", "simulation")
            shown = engine_examples(latent, [ex.window for ex in ev.real.examples])
            true, predicted = [], []
            for ex in ev.real.examples:
                lines = token_lines(shown[ex.window].tokens)
                asked = [
                    v
                    for u, v in script.simulated.items()
                    if lines in u and f"Explanation: {ev.real.explanation}\n" in u
                ]
                assert len(asked) == 1
                assert ex.probability * 10 == pytest.approx(max(asked[0]))
                assert ex.prediction == int(max(asked[0]) > 0)
                assert ex.predicted is not None and ex.predicted.tolist() == asked[0]  # token for token
                true.append(ex.acts)
                predicted.append(asked[0])
            pooled = np.corrcoef(np.concatenate(true), np.concatenate(predicted))[0, 1]
            assert ev.real.details["correlation"] == pytest.approx(pooled)
    finally:
        b.close()


def sent_fuzzing_excerpts(script: Scripted) -> list[str]:
    """Every marked excerpt the scripted server was sent (one excerpt per prompt in these tests), as sent."""
    head = "Excerpt 1: "
    return [
        line[len(head) :] for u in script.labelled for line in u.split("\n") if line.startswith(head) and "<<" in line
    ]


def test_fuzzing_marks_are_the_ones_the_scorer_was_shown(scored, engine_examples):
    """Each excerpt's marks, as the score row stores them, are exactly those of a prompt the scorer sent, for the
    real explanation and the control; the correct ones are the threshold's, the wrong ones all on tokens that did not
    fire, and the pane lists those by position and token."""
    db, latents, script = scored
    sent = sent_fuzzing_excerpts(script)
    b = Browser.open(db)
    vocab = b.vocab()
    right = wrong = 0
    stored_texts = []
    try:
        for latent in latents:
            ev = b.evidence(latent, "default", "fuzzing")
            assert ev.threshold is not None
            for side in (ev.real, ev.control):
                assert not side.notes  # nothing left unsaid for a row scored with the marks kept
                shown = engine_examples(latent, [ex.window for ex in side.examples])
                for ex in side.examples:
                    assert ex.marked is not None and ex.marks is not None and ex.marks.any()
                    marked = with_marks(shown[ex.window], ex.marks)
                    assert marked in sent, marked  # this excerpt, these marks, in a prompt sent
                    stored_texts.append(marked)
                    if ex.label == 1:
                        np.testing.assert_array_equal(ex.marks, ex.acts >= ev.threshold * ex.max_act)
                        assert ex.wrong_marks == []
                        right += 1
                    else:
                        assert ex.wrong_marks == ex.marked and all(ex.acts[i] <= 0 for i in ex.marked)
                        wrong += 1
            plain = evidence_text(ev, vocab, 1.0).plain
            assert "not stored" not in plain
            for ex in ev.real.examples:
                if ex.label == 0:
                    tokens = tokens_as_text(vocab, [ex.tokens[i] for i in ex.marked])
                    listed = ", ".join(f"{i} {visible(t)!r}" for i, t in zip(ex.marked, tokens))
                    assert f"wrong marks ({len(ex.marked)}, on tokens that did not fire): {listed}" in plain
            assert plain.count("wrong marks (") == sum(ex.label == 0 for ex in ev.real.examples)
    finally:
        b.close()
    assert right >= 3 and wrong >= 2
    # one prompt per stored outcome (one excerpt per prompt, none failed): the stored marks are all that was sent
    assert sorted(sent) == sorted(stored_texts)


def test_an_older_fuzzing_row_without_marks_says_so(scored, tmp_path):
    """Rows scored before the marks were kept: the correct marks are recomputed from the threshold (the same as the
    stored ones), the moved ones are said to be not stored, never guessed."""
    src, latents, _ = scored
    db = tmp_path / "old.db"
    with sqlite3.connect(src) as a, sqlite3.connect(db) as c:
        a.backup(c)
    b = Browser.open(src)
    stored = {latent: b.evidence(latent, "default", "fuzzing") for latent in latents}
    b.close()
    with sqlite3.connect(db) as c:
        c.execute("update scores set details = json_remove(details, '$.marks') where scorer = 'fuzzing'")
    b = Browser.open(db)
    try:
        for latent in latents:
            ev = b.evidence(latent, "default", "fuzzing")
            assert any("which silent tokens" in note for note in ev.real.notes)
            for ex, new in zip(ev.real.examples, stored[latent].real.examples):
                assert ex.marked is None and ex.wrong_marks == []
                if ex.label == 1:
                    np.testing.assert_array_equal(ex.marks, new.marks)  # recomputed = as sent
                else:
                    assert ex.marks is None
            plain = evidence_text(ev, b.vocab(), 1.0).plain
            n_wrong = sum(ex.label == 0 for ex in ev.real.examples)
            assert plain.count("(marks moved to silent tokens: not stored)") == n_wrong > 0
            assert "wrong marks (" not in plain
    finally:
        b.close()


class Pane(App):
    """The detail pane alone, as wide as the terminal, with the UI thread's Browser the pane reads evidence from."""

    def __init__(self, db: Path):
        super().__init__()
        self.browser = Browser.open(db)

    def compose(self) -> ComposeResult:
        yield LatentDetailView(False, id="detail")

    def on_unmount(self) -> None:
        self.browser.close()


def example_lines(plain: str) -> list[tuple[str, str]]:
    """(header, excerpt) pairs of an unwrapped evidence section: an example's header starts with its verdict, and
    its excerpt follows on the next line, indented by two spaces."""
    lines = plain.split("\n")
    heads = (*VERDICTS.values(), "failed")
    return [(line, lines[i + 1][2:]) for i, line in enumerate(lines[:-1]) if line.startswith(heads)]


def test_evidence_in_the_pane_names_each_excerpts_verdict(scored, monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")
    db, latents, _ = scored
    latent = latents[0]

    async def go():
        app = Pane(db)
        async with app.run_test(size=(80, 40)) as pilot:
            view = app.query_one(LatentDetailView)
            view.show(app.browser.detail(latent))
            view.focus()
            await pilot.pause()
            assert "evidence" not in view.plain_text()  # nothing read before it is asked for
            shown = []
            for _ in view.evidence_keys():
                await pilot.press("e")
                assert view.evidence is not None
                shown.append(view.evidence.scorer)
                assert f"evidence {len(shown)}/{len(view.evidence_keys())}: {shown[-1]}" in view.plain_text()
                assert max(s.cell_length for s in view._lines) <= view.scrollable_content_region.width
            await pilot.press("e")
            assert view.evidence is None and "evidence " not in view.plain_text()
            stored = rows(db, "select scorer from scores where latent = ? and control = 0", [latent])
            assert sorted(shown) == sorted(r[0] for r in stored) == sorted((*SCORED, "generation"))
            return app.browser.evidence(latent, "default", "detection")

    ev = asyncio_run(go())
    plain = evidence_text(ev, Browser.open(db).vocab(), 1.0).plain
    pairs = example_lines(plain)
    real = [ex for ex in ev.real.examples]
    assert len(pairs) == len(real)
    vocab = Browser.open(db).vocab()
    for verdict in VERDICTS.values():
        want = sorted(
            "".join(visible(t) for t in tokens_as_text(vocab, ex.tokens)) for ex in real if ex.verdict == verdict
        )
        got = sorted(excerpt for head, excerpt in pairs if head.startswith(verdict))
        assert got == want, verdict
    assert any(head.startswith("false positive") for head, _ in pairs)  # the script gives every kind


def asyncio_run(coro):
    return asyncio.run(coro)


def test_values_modal_and_per_window_scale(scored, monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")
    db, latents, _ = scored
    latent = latents[-1]
    with ActivationStore.open(db, readonly=True) as store:
        interp = Interpreter(llm_stage_config(db, ["http://unused"]), store, None)
        detail = Browser.open(db).detail(latent)
        first = detail.groups[0].windows[0]
        window = first.seq * interp.queries.windows_per_seq + first.start // interp.queries.window_len
        (cached,) = interp.examples(latent, [window])
        interp.close()

    async def go():
        app = Pane(db)
        async with app.run_test(size=(80, 40)) as pilot:
            view = app.query_one(LatentDetailView)
            view.show(app.browser.detail(latent))
            view.focus()
            await pilot.pause()
            hot = COLOUR_STYLES[3].bgcolor

            def top_bucket() -> int:
                return sum(1 for s in view._lines for seg in s if seg.style and seg.style.bgcolor == hot)

            before = top_bucket()
            await pilot.press("h")
            assert "of each window's max" in view.plain_text()
            n_windows = sum(len(g.windows) for g in detail.groups)
            assert top_bucket() >= n_windows > before  # every window's own peak is now at full heat
            await pilot.press("v")
            screen = app.screen
            assert isinstance(screen, ValuesScreen)
            table = str(screen.query_one("#values").render())
            values = [float(m) for m in re.findall(r"^\s*\d+  .{24} +(-?\d+\.\d{4})$", table, re.M)]
            np.testing.assert_allclose(values, cached.acts, atol=5e-5)
            await pilot.press("escape")
            assert not isinstance(app.screen, ValuesScreen)

    asyncio_run(go())


def test_lens_is_a_two_column_table(tmp_path):
    from autointerp.store.synthetic import make_synthetic_db

    db = make_synthetic_db(tmp_path / "s.db", 20)
    b = Browser.open(db)
    detail: LatentDetail = b.detail(3)
    b.close()
    assert detail.promoted and detail.suppressed
    lines = lens_table(detail).plain.rstrip("\n").split("\n")
    assert lines[0].split("│")[0].strip() == "promotes" and lines[0].split("│")[1].strip() == "suppresses"
    body = lines[1:]
    assert len(body) == max(len(detail.promoted), len(detail.suppressed))
    for line, p, s in zip(body, detail.promoted, detail.suppressed):
        left, right = line.split(" │ ")
        for cell, (tok, value) in ((left, p), (right, s)):
            assert cell[:16].rstrip() == visible(tok)[:16].rstrip()
            assert float(cell[16:]) == pytest.approx(value, abs=0.005)


def test_nothing_is_clipped_under_the_scrollbar_and_the_scores_header_is_one_line(scored, monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")
    db, latents, _ = scored

    async def go():
        app = Pane(db)
        async with app.run_test(size=(80, 30)) as pilot:
            view = app.query_one(LatentDetailView)
            view.show(app.browser.detail(latents[0]))
            await pilot.pause()
            assert view.max_scroll_y > 0  # long enough for a scrollbar
            usable = 80 - 2 - view.styles.scrollbar_size_vertical  # padding 0 1, then the scrollbar's gutter
            assert view.scrollable_content_region.width == usable
            assert max(s.cell_length for s in view._lines) <= usable
            text = view.plain_text().split("\n")
            header = [line for line in text if line.startswith("explainer")]
            assert len(header) == 1 and header[0].rstrip().endswith("recall 1→10")
            for scorer in SCORED:  # full names in the scorer column
                assert any(line.split()[1:2] == [scorer] for line in text if line.startswith("default ")), scorer

    asyncio_run(go())


def test_generation_texts_their_peaks_and_whether_they_fired(scored, subject_model):
    db, latents, _ = scored
    latent = latents[0]
    b = Browser.open(db)
    ev = b.evidence(latent, "default", "generation")
    vocab = b.vocab()
    b.close()
    row = score_row(db, latent, "generation")
    assert [ex.text for ex in ev.real.examples] == [t["text"] for t in json.loads(row["details"])["texts"]] == TEXTS
    with ActivationStore.open(db, readonly=True) as store:
        interp = share_subject(Interpreter(llm_stage_config(db, ["http://unused"]), store, None), subject_model)
        try:
            acts = interp.resources.probe.activations(TEXTS, latent)  # the texts run again through the subject model
        finally:
            interp.close()
    for ex, a in zip(ev.real.examples, acts):
        if a is None:
            assert ex.failed and ex.verdict == "failed" and ex.text_peak is None
        else:
            assert ex.text_peak == pytest.approx(float(a.max()), rel=1e-5)
            assert ex.verdict == ("true positive" if a.max() > 0 else "false negative")
    counts = ev.real.verdict_counts()
    assert (counts["true positive"], counts["false negative"], counts["failed"]) == (
        row["tp"],
        row["fn"],
        row["n_failed"],
    )
    lines = evidence_text(ev, vocab, 1.0).plain.split("\n")
    for ex in ev.real.examples:
        if ex.text:
            at = lines.index("  " + ex.text)
            assert lines[at - 1].startswith("did not fire" if ex.verdict == "false negative" else "fired")


def test_the_apps_own_detail_pane_at_80_columns_keeps_clear_of_its_scrollbar(scored, monkeypatch):
    from autointerp.tui.app import AutointerpApp

    monkeypatch.setenv(CHECK_THREADS_ENV, "1")
    db, _, _ = scored

    async def go():
        app = AutointerpApp(db, poll_s=60)
        async with app.run_test(size=(80, 30)) as pilot:
            for _ in range(500):
                if app.detail_count >= 1:
                    break
                await pilot.pause(0.02)
            view = app.query_one("#detail", LatentDetailView)
            assert view.detail is not None and view.max_scroll_y > 0
            width = view.scrollable_content_region.width
            # padding and any border, then the scrollbar's gutter, kept whether or not the scrollbar shows
            assert width == view.outer_size.width - view.styles.gutter.width - view.styles.scrollbar_size_vertical
            assert max(s.cell_length for s in view._lines) <= width

    asyncio_run(go())


def test_intruder_groups_and_picks_are_the_ones_the_scorer_saw(scored):
    """Each intruder outcome keeps its group as shown: the intruder (the outcome's non-activating window) among the
    latent's held-out activating windows, and the window named, which is the intruder exactly when it was hit."""
    from autointerp.tui.evidence import evidence_text

    db, latents, _ = scored
    b = Browser.open(db)
    try:
        for latent in latents:
            ev = b.evidence(latent, "default", "intruder")
            roles = {w: r for w, r in b._conn.execute("select window, role from samples where latent = ?", [latent])}
            assert not ev.real.notes and ev.real.examples
            for ex in ev.real.examples:
                assert ex.group is not None and ex.window in ex.group and len(ex.group) == 3  # 2 + the intruder
                assert roles[ex.window] == "non_activating"
                assert all(roles[w] == "activating" for w in ex.group if w != ex.window)
                if ex.failed:
                    assert ex.named is None
                else:
                    assert ex.named in ex.group and (ex.named == ex.window) == (ex.verdict == "true positive")
            shown = evidence_text(ev, b.vocab(), 1.0).plain
            assert shown.count("intruder shown as excerpt") == len(ev.real.examples)
    finally:
        b.close()


def test_open_evidence_is_read_again_when_its_score_rows_are_written(scored, tmp_path, monkeypatch):
    """The evidence open in the app's detail pane follows its score rows: a control row landing and a rescore in
    place (the store upserts: same rowid, new created_at), each written by another connection as a scoring process
    would, show on the next polls without a key; polls with nothing written leave the drawing alone."""
    from autointerp.store.clock import now
    from autointerp.tui.app import AutointerpApp

    monkeypatch.setenv(CHECK_THREADS_ENV, "1")
    src, latents, _ = scored
    db = tmp_path / "live.db"
    with sqlite3.connect(src) as a, sqlite3.connect(db) as b:
        a.backup(b)  # the whole file, WAL included
    latent = latents[0]
    where = "latent = ? and explainer = 'default' and scorer = 'detection' and control = ?"
    with sqlite3.connect(db) as c:  # the control row is written back later, while its evidence is open
        c.row_factory = sqlite3.Row
        control = dict(c.execute(f"select * from scores where {where}", [latent, 1]).fetchone())
        c.execute(f"delete from scores where {where}", [latent, 1])

    def counts(row: dict) -> str:
        return f"(row: tp {row['tp']} fp {row['fp']} tn {row['tn']} fn {row['fn']}, failed {row['n_failed']})"

    def line(view: LatentDetailView, head: str, end: str) -> str:
        """The evidence's `head` line as shown, unwrapped (whitespace runs as one space), up to `end`."""
        flat = " ".join(view.plain_text().split())
        return flat.split(f" {head}: ")[1].split(end)[0]

    async def go():
        app = AutointerpApp(db, poll_s=0.1)
        async with app.run_test(size=(100, 40)) as pilot:

            def until(condition, timeout=30.0):
                return wait_until(pilot, condition, timeout)

            await until(lambda: app.detail_count >= 1)
            app.jump(latent)
            await until(lambda: app.shown_latent == latent)
            view = app.query_one("#detail", LatentDetailView)
            view.focus()
            for _ in range(view.evidence_keys().index(("default", "detection")) + 1):
                await pilot.press("e")
            assert view.evidence.scorer == "detection" and view.evidence.control is None
            assert "\ncontrol: " not in view.plain_text()
            drawn, polls = view._lines, app.readers.polls
            await until(lambda: app.readers.polls >= polls + 3)
            await pilot.pause()
            assert view._lines is drawn  # nothing written: not redrawn

            with sqlite3.connect(db) as c:
                c.execute(
                    f"insert into scores ({', '.join(control)}) values ({', '.join('?' * len(control))})",
                    list(control.values()),
                )
            await until(lambda: "\ncontrol: " in view.plain_text())
            assert counts(control) in line(view, "control", " (latent")
            assert view.evidence.control is not None and view.evidence_at is not None  # still open, same scorer
            # the latent is read again too: its scores table has the control beside the real row now
            await until(lambda: any(e["scorer"] == "detection" and e.get("control") for e in view.detail.scores))

            with sqlite3.connect(db) as c:  # a rescore in place: one answer flipped, the counts with it
                c.row_factory = sqlite3.Row
                real = dict(c.execute(f"select * from scores where {where}", [latent, 0]).fetchone())
                outcomes = json.loads(real["outcomes"])
                flip = next(i for i, o in enumerate(outcomes) if not o.get("failed"))
                o = outcomes[flip]
                key = {(1, 1): "tp", (0, 1): "fp", (0, 0): "tn", (1, 0): "fn"}
                real[key[(o["label"], o["prediction"])]] -= 1
                o["prediction"] = 1 - o["prediction"]
                real[key[(o["label"], o["prediction"])]] += 1
                c.execute(
                    f"update scores set outcomes = ?, tp = ?, fp = ?, tn = ?, fn = ?, created_at = ? where {where}",
                    [json.dumps(outcomes), real["tp"], real["fp"], real["tn"], real["fn"], now(), latent, 0],
                )
            assert counts(real) not in line(view, "scored", " control: ")
            await until(lambda: counts(real) in line(view, "scored", " control: "))
            assert view.evidence.real.examples[flip].prediction == o["prediction"]
            assert view.evidence.real.examples[flip].verdict == VERDICTS[(o["label"], o["prediction"])]
            assert app.return_code is None  # set (to 1) by an unhandled exception

    asyncio_run(go())
