"""The installed `autointerp-tui` entry point as a real process: in a real terminal (tmux) while a real
`autointerp batch` writes the database, and as a browser app (`--serve`) bound to the loopback interface."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from helpers.batch_config import write_config
from helpers.cli import batch_cmd
from helpers.databases import copy_db, rows
from helpers.servers import free_port, stop_process

from autointerp.store.browse import CHECK_THREADS_ENV
from autointerp.tui.heatmap import visible


@pytest.fixture(autouse=True)
def check_threads(monkeypatch):
    # The TUI processes inherit it: a connection read by two threads ends the TUI (store/browse.py), failing the test.
    monkeypatch.setenv(CHECK_THREADS_ENV, "1")


# The real_cache_db fixture's cache settings (so the batch finds the cache complete and goes straight to
# explain and score), with test_batch's small explain/score settings for the 2 most frequent latents.
def tui_script() -> str:
    """The installed console script of the interpreter running the tests (not some other one on PATH)."""
    script = shutil.which("autointerp-tui", path=str(Path(sys.executable).parent)) or shutil.which("autointerp-tui")
    assert script, "the autointerp-tui console script is not installed"
    return script


def file_digest(*paths: Path) -> dict[str, str | None]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths}


class Tmux:
    """A private tmux server (its own socket, no user config): tests never see or touch a user's tmux."""

    def __init__(self) -> None:
        self.socket = f"autointerp-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # COLUMNS and LINES (which pytest-xdist workers set to 80x24) would override the pane's size in the TUI.
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE", "COLUMNS", "LINES")}
        self.screen = ""  # the last capture, for failure messages

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
        )
        if check:
            assert r.returncode == 0, f"tmux {' '.join(args)}: {r.stderr}"
        return r

    def capture(self) -> str:
        r = self("capture-pane", "-p", "-t", "tui", check=False)
        if r.returncode == 0:
            self.screen = r.stdout
        return r.stdout if r.returncode == 0 else ""

    def alive(self) -> bool:
        return self("has-session", "-t", "tui", check=False).returncode == 0

    def wait_for(self, what: str, condition, timeout: float, proc: subprocess.Popen | None = None) -> str:
        """Capture the pane every 0.5 s until `condition(screen)` holds; the screen that satisfied it."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.capture()
            if condition(screen):
                return screen
            assert self.alive(), f"the TUI exited while waiting for {what}; last screen:\n{self.screen}"
            if proc is not None:
                assert proc.poll() is None, f"the batch exited before the TUI showed {what}; screen:\n{self.screen}"
            assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s; screen:\n{self.screen}"
            time.sleep(0.5)

    def kill_server(self) -> None:
        self("kill-server", check=False)
        # tmux leaves its socket file behind: remove it (it lives in tmux's own directory, not in tmp_path).
        tmpdir = Path(self.env.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (tmpdir / self.socket).unlink(missing_ok=True)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tui_in_tmux_while_a_batch_writes(real_cache_db, tmp_path):
    db = copy_db(real_cache_db, tmp_path / "live.db")
    cfg = tmp_path / "c.toml"
    # the real_cache_db fixture's chunks, so the batch finds its cache complete
    write_config(cfg, db, chunk_tokens=4096, stages=("explain", "score"))
    log_path = tmp_path / "batch.log"
    status_file = tmp_path / "tui.status"
    tmux = Tmux()
    batch = None
    try:
        with open(log_path, "wb") as log:
            batch = subprocess.Popen(batch_cmd(cfg), stdout=log, stderr=subprocess.STDOUT)

        def batch_log() -> str:
            return log_path.read_text(errors="replace")[-3000:]

        # Start the TUI once the batch has registered its run, so that it opens on the monitor by itself.
        deadline = time.monotonic() + 60
        while not rows(db, "select 1 from runs where status = 'running'"):
            assert batch.poll() is None, f"the batch exited with {batch.returncode}:\n{batch_log()}"
            assert time.monotonic() < deadline, f"the batch registered no run in 60 s:\n{batch_log()}"
            time.sleep(0.2)
        # `; echo $?` records the TUI's exit status: the pane (and the session) still end when it exits.
        command = f"{shlex.quote(tui_script())} {shlex.quote(str(db))}; echo $? > {shlex.quote(str(status_file))}"
        tmux("new-session", "-d", "-s", "tui", "-x", "160", "-y", "48", command)

        # The monitor follows the batch while it runs: the run is "running" and a stage line counts latents.
        tmux.wait_for(
            "a running explain/score stage",
            lambda s: re.search(r"run \d+: running", s) and re.search(r"(explain|score)\s+\d+/2 latents", s),
            timeout=90,
            proc=batch,
        )
        try:
            code = batch.wait(240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the batch did not finish in 240 s:\n{batch_log()}")
        assert code == 0, batch_log()
        screen = tmux.wait_for("the run done", lambda s: re.search(r"run \d+: done", s), timeout=15)
        assert "Traceback" not in screen
        for stage in ("explain", "score"):
            # the stage's line, wrapped onto a second one when its figures are long (elapsed minutes, cached tokens)
            assert re.search(rf"{stage}\s+2/2 latents[^\n]*\n?[^\n━]*finished", screen), screen
        # From here on only the TUI has the database open: nothing it does may change the files.
        files = [db, db.with_name(db.name + "-wal")]
        before = file_digest(*files)

        # The batch's results, read by this test (read-only).
        explanations = rows(db, "select latent, text from explanations")
        assert len(explanations) == 2, explanations
        scored = rows(db, "select latent, scorer, control from scores")
        assert {(x[0], s, c) for x in explanations for s in ("detection", "embedding") for c in (0, 1)} <= set(scored)
        texts = [t for _, t in explanations if t and t.strip()]
        assert texts, explanations
        prefixes = [visible(t.split("\n")[0])[:15] for t in texts]

        # Latents tab: the header row, then, sorted by frequency (most frequent first, as `top:2` chose them),
        # the first line of each explanation.
        tmux("send-keys", "-t", "tui", "2")
        tmux.wait_for("the latent list header", lambda s: re.search(r"latent\s+freq\s+max.*explanation", s), 10)
        for _ in range(10):
            if "sort: frequency ↓" in tmux.capture():
                break
            tmux("send-keys", "-t", "tui", "s")
            time.sleep(0.5)
        tmux("send-keys", "-t", "tui", "g")  # the cursor stayed on latent 0 wherever it went: back to the top
        screen = tmux.wait_for(
            "an explanation from the database", lambda s: "sort: frequency ↓" in s and all(p in s for p in prefixes), 10
        )
        assert "Traceback" not in screen

        # `q` quits: the TUI exits with status 0 and the tmux session ends with it.
        tmux("send-keys", "-t", "tui", "q")
        deadline = time.monotonic() + 10
        while tmux.alive():
            assert time.monotonic() < deadline, f"the TUI did not exit within 10 s of `q`:\n{tmux.capture()}"
            time.sleep(0.2)
        assert status_file.read_text().strip() == "0", f"exit status {status_file.read_text()!r}:\n{tmux.screen}"
    finally:
        tmux.kill_server()
        if batch is not None and batch.poll() is None:
            stop_process(batch)

    # The TUI only read: no audit rows, the files it had open unchanged, the batch's run recorded as done.
    assert file_digest(*files) == before
    assert rows(db, "select count(*) from audits") == [(0,)]
    assert rows(db, "select status, n_latents from runs") == [("done", 2)]


def test_serve_binds_loopback_only(tmp_path):
    import asyncio

    import aiohttp  # textual-serve's own web framework

    from autointerp.store.synthetic import make_synthetic_db

    db = make_synthetic_db(tmp_path / "s.db", 50)
    port = free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [tui_script(), str(db), "--serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = psutil.Process(proc.pid)

    def server_log() -> str:
        return log_path.read_text(errors="replace")[-3000:]

    def listening(tree: list[psutil.Process]) -> list:
        out = []
        for p in tree:
            try:
                out += [c for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
            except psutil.NoSuchProcess:
                pass
        return out

    apps: list[psutil.Process] = []
    commands: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"exited with {proc.returncode}:\n{server_log()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    status, html = r.status, r.read().decode("utf-8", "replace")
                break
            except OSError:
                assert time.monotonic() < deadline, f"no answer in 30 s:\n{server_log()}"
                time.sleep(0.2)
        assert status == 200
        # textual-serve's page: its JS terminal, the app's name, a websocket back to the same loopback address.
        assert "static/js/textual.js" in html and ">autointerp<" in html, html[:2000]
        assert f"ws://127.0.0.1:{port}/ws" in html, html[:2000]
        sockets = listening([server, *server.children(recursive=True)])
        assert any(c.laddr.port == port for c in sockets), sockets
        assert all(c.laddr.ip == "127.0.0.1" for c in sockets), sockets

        # What a browser does: open the websocket. The server starts the TUI for it, which draws its tabs;
        # with the app running, the whole process tree still listens on the loopback interface only. `q` quits.
        async def browse() -> tuple[bytes, list, bool]:
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"ws://127.0.0.1:{port}/ws?width=120&height=40") as ws:
                    screen, end = b"", time.monotonic() + 30
                    while b"Latents [2]" not in screen and time.monotonic() < end:
                        try:
                            msg = await ws.receive(timeout=1)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type != aiohttp.WSMsgType.BINARY:
                            break
                        screen += msg.data
                    apps.extend(server.children(recursive=True))
                    commands.extend(" ".join(p.cmdline()) for p in apps)
                    sockets = listening([server, *apps])
                    await ws.send_json(["stdin", "q"])
                    closed, end = False, time.monotonic() + 10
                    while not closed and time.monotonic() < end:
                        try:
                            msg = await ws.receive(timeout=1)
                        except asyncio.TimeoutError:
                            continue
                        closed = msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                    return screen, sockets, closed

        screen, sockets, closed = asyncio.run(browse())
        assert b"Latents [2]" in screen and b"Monitor [1]" in screen, f"{screen[-2000:]!r}\n{server_log()}"
        assert any("-m autointerp.tui" in c for c in commands), commands
        assert sockets and all(c.laddr.ip == "127.0.0.1" for c in sockets), sockets
        assert closed, "the websocket stayed open after `q`"
        gone, alive = psutil.wait_procs(apps, timeout=10)
        assert not alive, f"the served TUI did not exit after `q`: {alive}"
        assert "Traceback" not in server_log(), server_log()
    finally:
        stop_process(proc)
        for p in apps:  # nothing left behind, whatever happened
            if p.is_running():
                p.kill()
