"""The real embedded SmolLM2 through TransformerLens, the real shipped SAE, a real SQLite file."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers.cli import run_cli
from safetensors.torch import load_file

from autointerp.engine.activations.cache import run_cache, sequence_stream
from autointerp.engine.activations.model import gguf_as_safetensors
from autointerp.engine.activations.setup import prepare
from autointerp.engine.config import CacheConfig
from autointerp.engine.defaults import EMBEDDED_HOOKPOINT, embedded_sae, smollm2_gguf
from autointerp.store.db import ActivationStore
from autointerp.store.queries import WindowQueries

SMALL = dict(seq_len=64, n_tokens=64 * 6, chunk_tokens=128, batch_size=2)


@pytest.fixture(scope="module")
def model(subject_model):
    return subject_model


def independent_dense(tokens: np.ndarray) -> torch.Tensor:
    """Dense latent activations computed without our model or coder code: plain transformers with
    a forward hook on the HF module the SAE was trained on, and the SAE formula written out."""
    from transformers import AutoModelForCausalLM

    folder, _ = gguf_as_safetensors(smollm2_gguf())
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    layer = int(EMBEDDED_HOOKPOINT.split(".")[1])
    grabbed = {}
    hf.model.layers[layer].register_forward_hook(
        lambda m, i, o: grabbed.__setitem__("x", o[0] if isinstance(o, tuple) else o)
    )
    with torch.inference_mode():
        hf(torch.from_numpy(tokens))
    x = grabbed["x"]
    w = load_file(str(embedded_sae() / "sae.safetensors"))
    cfg = json.loads((embedded_sae() / "cfg.json").read_text())
    pre = torch.relu((x - w["b_dec"].float()) @ w["encoder.weight"].float().T + w["encoder.bias"].float())
    vals, idx = pre.topk(cfg["k"], dim=-1)
    dense = torch.zeros_like(pre).scatter_(-1, idx, vals)
    dense[:, 0, :] = 0  # the start token is never an activation
    return dense


def test_cache_equals_independent_dense_computation(tmp_path, model):
    cfg = CacheConfig(**SMALL)
    parts = prepare(cfg, model=model)
    assert parts.hook == "blocks.15.hook_resid_post"
    seen: list[tuple[int, int]] = []
    result = run_cache(cfg, str(tmp_path / "c.db"), lambda done, total: seen.append((done, total)), parts=parts)
    assert result.chunks_total == 3 and result.tokens == 64 * 6
    # progress is reported batch by batch, each token once: it climbs to the total and never past it
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (64 * 6, 64 * 6)
    store = ActivationStore.open(tmp_path / "c.db", readonly=True)
    seqs = store.sequences(range(6))
    tokens = np.stack([seqs[i] for i in range(6)]).astype(np.int64)
    expected_tokens = np.stack(list(sequence_stream(parts, cfg)))
    np.testing.assert_array_equal(tokens, expected_tokens)
    dense = independent_dense(tokens)  # [6, 64, M]
    flat = dense.reshape(-1, dense.shape[-1])
    nz_expected = set(zip(*[t.tolist() for t in torch.nonzero(flat.T > 0, as_tuple=True)]))
    got = set()
    for latent in range(parts.coder.num_latents):
        pos, vals = store.latent_activations(latent)
        for p, v in zip(pos.tolist(), vals.tolist()):
            got.add((latent, p))
            assert v == pytest.approx(float(flat[p, latent]), rel=2e-3, abs=2e-3)
    # Same positions (a near-tie at the k-th place may swap one latent; allow none here but report).
    assert got == nz_expected
    assert store.nnz() == len(nz_expected)
    # Statistics and windows are there for the later stages.
    stats = store.latent_stats(next(iter(got))[0])
    assert stats["count"] > 0 and stats["max_act"] > 0
    q = WindowQueries(store, 32)
    aw = q.activating(next(iter(got))[0])
    win = q.fetch(aw, q.top(aw, 1))[0]
    assert win.max_act == pytest.approx(float(aw.max_acts.max()))
    store.close()


def dump(db):
    conn = sqlite3.connect(db)
    out = {
        "acts": sorted(conn.execute("select latent, seg, n, max_act, first_pos, width, packed, data from segments")),
        "staged": sorted(conn.execute("select band, chunk, n, data from staged")),
        "seqs": sorted(conn.execute("select id, chunk, tokens from sequences")),
        "chunks": sorted(conn.execute("select id, first_seq, n_seqs, n_tokens, nnz from chunks")),
        "latents": sorted(conn.execute("select latent, count, max_act, deciles, hist_counts from latents")),
    }
    conn.close()
    return out


@pytest.mark.slow
def test_resume_after_kill_equals_uninterrupted(tmp_path, model):
    from autointerp.engine.config import load_config

    cfg = tmp_path / "c.toml"
    cfg.write_text("[cache]\nseq_len = 32\nn_tokens = 1024\nchunk_tokens = 64\nbatch_size = 2\n")  # 16 chunks
    # The uninterrupted cache in this process (the module's model: no second load); the killed one is a real process.
    whole = load_config(cfg).cache
    run_cache(whole, str(tmp_path / "whole.db"), parts=prepare(whole, model=model))
    db = tmp_path / "killed.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "autointerp.engine.commands.cli", "cache", "--config", str(cfg), "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
                    committed = c.execute("select count(*) from chunks").fetchone()[0]
            except sqlite3.OperationalError:
                committed = 0
            if committed >= 4:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= committed < 16, f"kill landed at {committed} chunks"
    resumed = run_cli("cache", "--config", str(cfg), "--db", str(db))
    assert resumed.returncode == 0, resumed.stderr
    assert "were already committed" in resumed.stdout
    assert dump(db) == dump(tmp_path / "whole.db")


def test_neuron_baseline_on_mlp_hidden_activations(tmp_path, model):
    """MLP neurons as latents (top-k per token) against a plain-transformers computation of
    act(gate(x)) * up(x), the input of the MLP's down projection."""
    from transformers import AutoModelForCausalLM

    cfg = CacheConfig(coder="neurons", hook="blocks.3.mlp.hook_post", neurons_k=8, **SMALL)
    parts = prepare(cfg, model=model)
    assert parts.coder.num_latents == 1536
    run_cache(cfg, str(tmp_path / "n.db"), parts=parts)
    store = ActivationStore.open(tmp_path / "n.db", readonly=True)
    tokens = np.stack([store.sequences(range(6))[i] for i in range(6)]).astype(np.int64)
    folder, _ = gguf_as_safetensors(smollm2_gguf())
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    grabbed = {}
    hf.model.layers[3].mlp.down_proj.register_forward_hook(lambda m, i, o: grabbed.__setitem__("h", i[0]))
    with torch.inference_mode():
        hf(torch.from_numpy(tokens))
    h = grabbed["h"].reshape(-1, 1536)
    vals, idx = h.topk(8, dim=-1)
    expected = {(int(j), p) for p in range(h.shape[0]) if p % 64 for v, j in zip(vals[p], idx[p]) if v > 0}
    got = set()
    for latent in range(1536):
        pos, v = store.latent_activations(latent)
        for p, a in zip(pos.tolist(), v.tolist()):
            got.add((latent, p))
            assert a == pytest.approx(float(h[p, latent]), rel=2e-3, abs=2e-3)
    assert got == expected
    assert store.provenance["coder_kind"] == "neurons" and store.provenance["hook"] == "blocks.3.mlp.hook_post"
    store.close()


def test_an_extended_cache_picks_the_corpus_up_where_it_stood_with_the_forward_it_began_with(tmp_path, model, caplog):
    """A cache resumed (here: extended from 3 to 6 chunks) reads the corpus from the position its last chunk
    recorded, tokenising nothing before it, and gives the activations of one uninterrupted run. A cache begun
    through the bridge's forward (every cache before schema 8) goes on through it."""
    import logging

    whole_cfg = CacheConfig(**dict(SMALL, n_tokens=64 * 12))  # 6 chunks of 2 sequences
    run_cache(whole_cfg, str(tmp_path / "whole.db"), parts=prepare(whole_cfg, model=model))
    half = CacheConfig(**dict(SMALL, n_tokens=64 * 6))
    db = str(tmp_path / "grown.db")
    run_cache(half, db, parts=prepare(half, model=model))
    with sqlite3.connect(db) as c:
        chunks = c.execute("select id, next_doc, carry is not null from chunks order by id").fetchall()
        assert [r[0] for r in chunks] == [0, 1, 2] and all(r[1] >= 1 for r in chunks)
        assert [r[2] for r in chunks] == [0, 0, 1]  # only the newest chunk keeps its carried tokens
        assert c.execute("select forward from provenance").fetchone()[0] == "plain"
    calls = []
    tokenise = model.tokenizer.__class__.__call__

    def counting(self, texts, *a, **kw):
        calls.append(len(texts))
        return tokenise(self, texts, *a, **kw)

    with caplog.at_level(logging.INFO, logger="autointerp"):
        model.tokenizer.__class__.__call__ = counting
        try:
            run_cache(whole_cfg, db, parts=prepare(whole_cfg, model=model))
        finally:
            model.tokenizer.__class__.__call__ = tokenise
    assert "the corpus picks up at document" in caplog.text
    fresh = []
    model.tokenizer.__class__.__call__ = lambda self, texts, *a, **kw: (
        fresh.append(len(texts)),
        tokenise(self, texts, *a, **kw),
    )[1]
    try:
        list(sequence_stream(prepare(whole_cfg, model=model), whole_cfg))
    finally:
        model.tokenizer.__class__.__call__ = tokenise
    assert sum(calls) < sum(fresh)  # the resumed run tokenised fewer documents than a run from the start (here none)
    a, b = (ActivationStore.open(tmp_path / n, readonly=True) for n in ("whole.db", "grown.db"))
    try:
        assert a.sequences(range(12)).keys() == b.sequences(range(12)).keys()
        for i, seq in a.sequences(range(12)).items():
            np.testing.assert_array_equal(seq, b.sequences([i])[i])
        for latent in range(model_latents(a)):
            pa, va = a.latent_activations(latent)
            pb, vb = b.latent_activations(latent)
            np.testing.assert_array_equal(pa, pb)
            np.testing.assert_array_equal(va, vb)
    finally:
        a.close()
        b.close()

    # A cache begun through the bridge: its provenance says so, and the chunks added now go through it too.
    with sqlite3.connect(db) as c:
        c.execute("update provenance set forward = 'bridge'")
    seen = []
    real = model.hook_activations

    def spy(tokens, hook, via_bridge=False):
        seen.append(via_bridge)
        return real(tokens, hook, via_bridge=via_bridge)

    model.hook_activations = spy
    try:
        more = CacheConfig(**dict(SMALL, n_tokens=64 * 16))
        run_cache(more, db, parts=prepare(more, model=model))
    finally:
        del model.hook_activations
    assert seen and all(seen)


def model_latents(store) -> int:
    return int(store.provenance["num_latents"])
