"""Real servers a test starts on 127.0.0.1 and always stops (llama.cpp's OpenAI-compatible server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest


def free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(port: int, log_path, timeout: float = 60.0, model=None) -> subprocess.Popen:
    """A real llama.cpp OpenAI-compatible server (llama_cpp.server, through autointerp.engine.interpretation.llm.serve for its AMX
    guard) with the embedded SmolLM2 on 127.0.0.1,
    returned once it answers. One thread for generation and for prompts (whose default is every core): on
    a 2-core machine shared with other work, llama.cpp's spinning thread barriers turned 0.3 s calls into 45 s."""
    import urllib.request

    from autointerp.engine.defaults import smollm2_gguf

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autointerp.engine.interpretation.llm.serve",
                "--model",
                str(model or smollm2_gguf()),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "1",
                "--n_threads_batch",
                "1",
                "--n_ctx",
                "4096",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{open(log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            pytest.fail(f"llama_cpp.server did not answer in {timeout:.0f} s:\n{open(log_path).read()[-2000:]}")
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
