"""The probe tab's worker process: `autointerp probe DB --serve`, started on first use and stopped when the app exits.

The TUI imports no model code (tui/ imports only store/): the engine runs in its own process, fed one JSON request
per line on its stdin and answering one JSON line each on its stdout. Closing its stdin ends it (so it also ends
when the app dies without stopping it: its next read sees the pipe close); `close` waits briefly, then terminates
and at last kills it. Thread-safe: the tab's workers call `ask`, one request at a time.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO

# The engine's command line, by module name: the TUI never imports it.
SERVE = ["-m", "autointerp.engine.commands.cli", "probe"]
# After its stdin closes the server ends by itself, but a Python that loaded torch takes 2-3 s to tear down: it
# holds nothing to save (it only reads the database), so it is terminated after a moment, and killed if it lingers.
END_WAIT_S = 0.2
KILL_AFTER_S = 3.0


class ProbeUnavailable(RuntimeError):
    """The worker process could not start or went away; the message is the line to show."""


class ProbeClient:
    def __init__(self, db_path: str, python: str = sys.executable) -> None:
        self.command = [python, *SERVE, db_path, "--serve"]
        self.proc: subprocess.Popen | None = None
        self.info: dict | None = None  # the server's ready line
        self.startup_s: float | None = None  # from start to its ready line
        self._lock = threading.Lock()
        self._closed = False
        self._stderr: IO[str] | None = None  # the server's stderr, read back for its last line when it ends

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self) -> None:
        t0 = time.perf_counter()
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
            bufsize=1,
            start_new_session=True,  # a ctrl+c in the terminal reaches the app, which stops it, not the server
        )
        atexit.register(self.close)  # the app's exit path stops it too; this is for an exit that skips it
        first = self._read_line()
        self.info = first if first.get("ready") else None
        if self.info is None:
            raise ProbeUnavailable(first.get("error") or "the probe process did not start")
        self.startup_s = time.perf_counter() - t0

    def _read_line(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise ProbeUnavailable(self._why_gone())
        return json.loads(line)

    def _why_gone(self) -> str:
        """The server's own last line (its `error: ...`), else its exit status."""
        text = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read()
        lines = [x for x in text.splitlines() if x.strip()]
        code = self.proc.returncode if self.proc is not None else None
        return lines[-1] if lines else f"the probe process ended (exit status {code})"

    def ask(self, text: str, latent: int | None, top: int = 10, explainer: str = "default") -> dict:
        """One answer ({"error": ...} for a request the server refused); raises ProbeUnavailable when the server
        cannot be started or has gone. Starts the server on first use (the model loads: seconds)."""
        with self._lock:
            if self._closed:
                raise ProbeUnavailable("the probe process was stopped")
            if self.proc is None:
                self._start()
            elif self.proc.poll() is not None:
                raise ProbeUnavailable(self._why_gone())
            assert self.proc is not None and self.proc.stdin is not None
            request = {"text": text, "latent": latent, "top": top, "explainer": explainer}
            try:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.proc.wait()
                raise ProbeUnavailable(self._why_gone()) from None
            return self._read_line()

    def close(self) -> None:
        """Stop the server (idempotent; safe from any thread, also while a worker waits on an answer)."""
        self._closed = True
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # the server ends at the end of its input
            except OSError:
                pass
            try:
                proc.wait(END_WAIT_S)
            except subprocess.TimeoutExpired:  # tearing down, still loading the model, or stuck: ask, then insist
                proc.terminate()
                try:
                    proc.wait(KILL_AFTER_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if proc.stdout is not None:
            try:
                proc.stdout.close()
            except OSError:
                pass
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        atexit.unregister(self.close)
