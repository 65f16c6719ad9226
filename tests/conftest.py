"""Shared fixtures. Stores are made by the real store code; models are the real embedded SmolLM2."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import numpy as np
import pytest

from autointerp.store.db import ActivationStore, ChunkInfo


def base_provenance(**over) -> dict:
    prov = {
        "model": "test-model", "model_hash": "m0", "hook": "blocks.0.hook_resid_post",
        "coder_kind": "sparsify", "coder_path": "/x", "coder_hash": "c0", "num_latents": 8, "d_in": 4,
        "corpus": "test", "corpus_hash": "h0", "seq_len": 16, "n_tokens_target": 64, "chunk_seqs": 2,
        "token_dtype": "uint16", "vocab_size": 100, "bos_token_id": 1, "seed": 0,
        "versions": {}, "config": {},
    }  # fmt: skip
    prov.update(over)
    return prov


def fill_store(path, n_chunks=2, seed=0, **prov_over) -> tuple[ActivationStore, dict]:
    """A store with random activations; returns it and the dense truth {(latent, global_pos): value}."""
    prov = base_provenance(**prov_over)
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    rng = np.random.default_rng(seed)
    seq_len, per_chunk, m = prov["seq_len"], prov["chunk_seqs"], prov["num_latents"]
    truth = {}
    for c in range(n_chunks):
        seqs = rng.integers(2, prov["vocab_size"], size=(per_chunk, seq_len))
        seqs[:, 0] = prov["bos_token_id"]
        lat, off, val = [], [], []
        for o in range(per_chunk * seq_len):
            if o % seq_len == 0:
                continue  # BOS: never an activation
            for latent in rng.choice(m, size=2, replace=False):
                v = np.float16(rng.uniform(0.1, 5.0))
                lat.append(latent), off.append(o), val.append(v)
                truth[(int(latent), c * per_chunk * seq_len + o)] = float(v)
        store.write_chunk(
            ChunkInfo(c, c * per_chunk, per_chunk, per_chunk * (seq_len - 1), len(val)), seqs,
            np.array(lat, np.int32), np.array(off, np.uint16), np.array(val, np.float16), 0.0,
        )  # fmt: skip
    return store, truth


@pytest.fixture
def filled_store(tmp_path):
    store, truth = fill_store(tmp_path / "t.db")
    yield store, truth
    store.close()


@pytest.fixture(scope="session")
def real_cache_db(tmp_path_factory):
    """A real cache: the embedded SmolLM2 + shipped SAE over 8,192 tokens of the embedded corpus.
    Tests copy the file (`copy_db`) before writing to it."""
    from autointerp.engine.cache import run_cache
    from autointerp.engine.config import CacheConfig

    path = tmp_path_factory.mktemp("realcache") / "cache.db"
    run_cache(CacheConfig(n_tokens=8192, chunk_tokens=4096, batch_size=8), str(path))
    return path


def write_stand_in_explanation(results, latent: int, text: str) -> None:
    """An explanation written directly (no LLM call): for tests about scoring, not explaining."""
    results.write_explanation({"latent": latent, "explainer": "default", "text": text, "n_calls": 0,
                               "n_failed_calls": 0, "prompt_tokens": 0, "cached_tokens": 0, "output_tokens": 0,
                               "llm_seconds": 0.0})  # fmt: skip


def copy_db(src, dst):
    import shutil

    shutil.copy(src, dst)
    return dst


def run_cli(*args, **kw) -> subprocess.CompletedProcess:
    """The real `autointerp` command line in a fresh process."""
    return subprocess.run([sys.executable, "-m", "autointerp.engine.cli", *args], capture_output=True, text=True, **kw)


def complete_and_close(backend, requests):
    """One `complete_many` on a fresh event loop, closing the backend after."""

    async def go():
        try:
            return await backend.complete_many(requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_llama_server(port: int, log_path, timeout: float = 60.0) -> subprocess.Popen:
    """A real llama.cpp OpenAI-compatible server (llama_cpp.server) with the embedded SmolLM2 on 127.0.0.1,
    returned once it answers. One thread for generation and for prompts (whose default is every core): on
    a 2-core machine shared with other work, llama.cpp's spinning thread barriers turned 0.3 s calls into 45 s."""
    import time
    import urllib.request

    from autointerp.engine.defaults import smollm2_gguf

    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--host", "127.0.0.1",
             "--port", str(port), "--n_threads", "1", "--n_threads_batch", "1", "--n_ctx", "4096"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
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
