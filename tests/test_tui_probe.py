"""The Probe tab through Textual's pilot, on a real cache and a real `autointerp probe --serve` worker process: type a
sentence, its heat map and top latents appear; enter on a top latent goes to it; `k` keeps the sentence on the
latent's audit (audit_probes), which the Audit tab shows; the worker process is gone once the app has exited,
also when the app exits while the model is still loading."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.databases import copy_db, rows
from helpers.llm_stage import write_stand_in_explanation
from helpers.tui import until
from textual.widgets import Input, OptionList, Static, TabbedContent

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.store.db import ActivationStore
from autointerp.tui.app import AutointerpApp
from autointerp.tui.audit import AuditPane
from autointerp.tui.heatmap import visible

SENTENCE = "quarterly shares in the bank rose 5% in London"  # q and digits are app keys elsewhere: typed here


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")  # a connection read by two threads fails the test (store/browse.py)


def gone(pid: int) -> bool:
    """The process has ended and been reaped (the client waits on it), so its id names nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def db(real_cache_db, tmp_path) -> tuple[Path, int]:
    """A copy of the real cache where one latent has an explanation (the audit queue holds only explained ones)."""
    path = copy_db(real_cache_db, tmp_path / "c.db")
    with ActivationStore.open(path) as store:
        latent = int(store.db.execute("select latent from latents order by count desc limit 1").fetchone()[0])
        write_stand_in_explanation(store.results, latent, "stand-in explanation")
    return path, latent


def test_probe_a_sentence_jump_to_a_top_latent_keep_it_on_the_audit(db):
    path, latent = db
    app = AutointerpApp(path, poll_s=0.2, rater="ada")
    seen: dict = {}

    async def go():
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: app.detail_count >= 1)
            app.jump(latent)
            await until(pilot, lambda: app.shown_latent == latent)
            await pilot.press("5")
            tab = app.tabs["probe"]
            await until(pilot, lambda: tab.pane is not None and isinstance(app.focused, Input))
            pane = tab.pane
            assert f"probe latent {latent}: stand-in explanation" in str(pane.query_one(".p-head", Static).render())
            await pilot.press(*SENTENCE, "enter")
            await until(pilot, lambda: tab.answers >= 1, timeout=120)  # the worker process loads the model first
            answer = pane.answer
            seen["pid"] = tab.client.pid
            assert answer["text"] == SENTENCE and answer["latents"][0]["latent"] == latent
            heat = pane.query_one(".p-heat", Static).render()
            assert "".join(map(visible, answer["tokens"])) in str(heat) and "strength:" in str(heat)
            acts = answer["latents"][0]["activations"]
            styled = {span.start for span in heat.spans}  # a token that fired is drawn with a style
            assert bool(styled) == any(a > 0 for a in acts)
            status = str(pane.query_one(".p-status", Static).render())
            assert f"{len(answer['tokens'])} tokens · latent {latent}: max {max(acts):.3f}" in status
            top = pane.query_one("#probe-top", OptionList)
            assert top.option_count == 10 and [r["max"] for r in answer["top"]] == sorted(
                (r["max"] for r in answer["top"]), reverse=True
            )
            # keep it on the audit
            await pilot.press("escape")
            await until(pilot, lambda: app.focused is top)
            await pilot.press("k")
            await until(pilot, lambda: tab.kept == 1)
            kept = rows(
                path, "select latent, explainer, rater, text, tokens, activations, max_activation from audit_probes"
            )
            assert kept == [
                (latent, "default", "ada", SENTENCE, json.dumps(answer["tokens"]), json.dumps(acts), max(acts))
            ]
            # the audit tab shows it under the latent
            await pilot.press("3")
            await until(pilot, lambda: bool(app.query(AuditPane)) and app.query_one(AuditPane).latent == latent)
            shown = str(app.query_one(AuditPane).query_one(".a-probes", Static).render())
            assert "kept probes (1)" in shown and "ada" in shown and SENTENCE in shown.replace("·", " ")
            # enter on the second top latent goes to it in the browser
            await pilot.press("5")
            await until(pilot, lambda: tab.active)
            top.focus()
            await pilot.press("down", "enter")
            other = answer["top"][1]["latent"]
            await until(pilot, lambda: app.shown_latent == other)
            assert app.query_one(TabbedContent).active == "latents"
            # back on the probe tab, the same sentence is probed on the latent now in view
            await pilot.press("5")
            await until(pilot, lambda: tab.answers >= 2 and pane.answer_latent == other)
            assert pane.answer["latents"][0]["latent"] == other and tab.client.pid == seen["pid"]
            assert not gone(seen["pid"])

    asyncio.run(go())
    assert gone(seen["pid"])  # stopped with the app


def test_the_worker_process_is_stopped_when_the_app_exits_while_the_model_loads(db):
    path, _ = db
    app = AutointerpApp(path, poll_s=0.2)
    seen: dict = {}

    async def go():
        async with app.run_test(size=(150, 45)) as pilot:
            await until(pilot, lambda: app.detail_count >= 1)
            await pilot.press("5")
            tab = app.tabs["probe"]
            await until(pilot, lambda: tab.pane is not None and isinstance(app.focused, Input))
            await pilot.press(*"a sentence", "enter")
            await until(pilot, lambda: tab.client is not None and tab.client.pid is not None)
            seen["pid"] = tab.client.pid
            assert tab.client.info is None  # still loading
            assert "starting the model" in str(tab.pane.query_one(".p-status", Static).render())
            await app.action_quit()

    asyncio.run(go())
    assert gone(seen["pid"])


@pytest.mark.slow
def test_the_worker_process_ends_when_the_app_is_killed(db):
    """kill -9 of the app: nothing stops the worker process, but its stdin closes with the app, which ends it."""
    path, latent = db
    code = (
        "import sys, time\n"
        "from autointerp.tui.probe_client import ProbeClient\n"
        "client = ProbeClient(sys.argv[1])\n"
        "assert 'tokens' in client.ask('hello there', int(sys.argv[2]))\n"
        "print(client.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    app = subprocess.Popen([sys.executable, "-c", code, str(path), str(latent)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(app.stdout.readline())
        assert not gone(pid)
        app.kill()
        app.wait()
        deadline = time.monotonic() + 30
        while not ended(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ended(pid)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def ended(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that no longer exists to reap it (it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
