"""The cache on other families than the embedded one, end to end: what it stores equals the coder applied to
TransformerLens's activations; an attention SAE (attn.hook_z) caches and annotates through W_O; a database made
from the wrong site before the post-norm fix is named by every reader and never resumed."""

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.engine.activations.cache import run_cache
from autointerp.engine.activations.coders import load_coder
from autointerp.engine.activations.model import SubjectModel
from autointerp.engine.config import CacheConfig
from autointerp.store.db import ActivationStore
from autointerp.store.schema import SCHEMA_VERSION

NUM_LATENTS = 96


def saelens_sae(folder: Path, d_in: int, hook: str, seed: int = 0) -> Path:
    """A random-weight SAELens-format SAE (ReLU) reading `hook`, with biases that make about a tenth fire."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w_enc = torch.randn(d_in, NUM_LATENTS, generator=g) / d_in**0.5
    weights = {
        "W_enc": w_enc,
        "b_enc": torch.full((NUM_LATENTS,), -0.05),
        "W_dec": torch.randn(NUM_LATENTS, d_in, generator=g) / d_in**0.5,
        "b_dec": torch.zeros(d_in),
    }
    save_file(weights, str(folder / "sae_weights.safetensors"))
    cfg = {"architecture": "standard", "d_in": d_in, "d_sae": NUM_LATENTS, "hook_name": hook}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def cache_cfg(family: str, hook: str, coder: Path) -> CacheConfig:
    return CacheConfig(
        model=f"tiny:{family}",
        hook=hook,
        coder=str(coder),
        seq_len=32,
        n_tokens=1024,
        batch_size=8,
        device="cpu",
        check_reconstruction=False,  # random weights reconstruct nothing: what is tested here is the site
    )


def stored_dense(db: Path) -> tuple[np.ndarray, dict]:
    """Every cached activation as a dense [global position, latent] array (tiny widths only), and the provenance."""
    with ActivationStore.open(db, readonly=True) as store:
        prov = dict(store.provenance)
        n = store.n_sequences() * prov["seq_len"]
        dense = np.zeros((n, prov["num_latents"]), np.float32)
        for latent in range(prov["num_latents"]):
            pos, val = store.latent_activations(latent)
            dense[pos, latent] = val
        seqs = store.sequences(range(store.n_sequences()))
    return dense, dict(prov, _seqs=seqs)


def reference_dense(model: SubjectModel, hook: str, coder, seqs: dict[int, np.ndarray]) -> np.ndarray:
    """The coder applied to TransformerLens's own value at `hook` (run_with_cache on the bridge), start token left out."""
    toks = torch.tensor(np.stack([seqs[i] for i in sorted(seqs)]).astype(np.int64))
    _, cache = model.bridge.run_with_cache(toks, names_filter=hook, return_cache_object=False)
    acts = cache[hook]
    acts = acts.flatten(-2) if acts.dim() == 4 else acts
    B, T, d = acts.shape
    sp = coder.encode(acts[:, 1:].reshape(-1, d).float())
    dense = np.zeros((B * T, coder.num_latents), np.float32)
    b, t = np.divmod(sp.rows.numpy(), T - 1)
    dense[b * T + t + 1, sp.latents.numpy()] = sp.values.numpy()
    return dense


@pytest.mark.parametrize(
    "family, hook, width",
    [
        ("gemma2", "blocks.1.attn.hook_z", 64),
        ("gemma3", "blocks.1.hook_mlp_out", 64),
        ("gpt2", "blocks.2.mlp.hook_post", 256),
    ],
)
def test_cache_stores_the_coder_of_transformer_lens_activations(tmp_path, family, hook, width):
    coder_dir = saelens_sae(tmp_path / "sae", width, hook)
    db = tmp_path / "c.db"
    run_cache(cache_cfg(family, "", coder_dir), str(db))  # the hook comes from the checkpoint's cfg.json
    dense, prov = stored_dense(db)
    assert prov["hook"] == hook and prov["forward"] == "plain" and prov["forward_sites"] == "2"
    assert prov["model_type"] == {"gemma3": "gemma3_text"}.get(family, family)
    assert "equal to TransformerLens" in prov["forward_reason"] and prov["start_rule"].startswith("bos: ")
    model = SubjectModel.load(f"tiny:{family}", "cpu", "float32")
    ref = reference_dense(model, hook, load_coder(coder_dir), prov["_seqs"])
    assert dense.shape == ref.shape and (ref > 0).sum() > 100
    np.testing.assert_allclose(dense, ref, rtol=2e-3, atol=2e-3)  # stored as float16


def test_attention_sae_logit_lens_goes_through_w_o(tmp_path):
    hook = "blocks.1.attn.hook_z"
    coder_dir = saelens_sae(tmp_path / "sae", 64, hook, seed=3)
    db = tmp_path / "z.db"
    run_cache(cache_cfg("llama", hook, coder_dir), str(db))
    model = SubjectModel.load("tiny:llama", "cpu", "float32")
    w_dec = load_coder(coder_dir).W_dec  # [latents, heads x d_head]
    w_o = model.bridge.blocks[1].attn.W_O.detach().float()  # [heads, d_head, d_model]
    resid = torch.einsum("lhd,hdm->lm", w_dec.reshape(NUM_LATENTS, 4, 16), w_o)
    logits = (resid * model.bridge.ln_final.weight.detach().float()) @ model.bridge.W_U.detach().float()
    with sqlite3.connect(db) as c:
        rows = {latent: json.loads(p) for latent, p in c.execute("select latent, promoted from directions")}
    assert len(rows) == NUM_LATENTS
    for latent in (0, 17, 95):
        assert [t for t, _ in rows[latent]] == logits[latent].topk(len(rows[latent])).indices.tolist()


@pytest.fixture(scope="module")
def stale_db(tmp_path_factory):
    """A Gemma-2 MLP-output cache as autointerp made it before the fix: schema 10, forward "plain", no sites
    version. (Its activations here are the right ones; what it records is what made the old ones wrong.)"""
    from helpers.schema import to_schema_10

    tmp = tmp_path_factory.mktemp("stale")
    coder_dir = saelens_sae(tmp / "sae", 64, "blocks.1.hook_mlp_out")
    db = tmp / "old.db"
    run_cache(cache_cfg("gemma2", "", coder_dir), str(db))
    with contextlib.closing(sqlite3.connect(db)) as c, c:  # closed: the WAL folded in before the file is copied
        to_schema_10(c)
    return db, coder_dir


def cli(*args, cwd=None):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "autointerp.engine.commands.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_a_cache_made_from_the_wrong_site_is_named_by_upgrade_info_and_the_monitor_and_never_resumed(
    stale_db, tmp_path
):
    import shutil

    from autointerp.store.browse import Browser
    from autointerp.tui.monitor import run_header

    src, coder_dir = stale_db
    db = tmp_path / "old.db"
    shutil.copy(src, db)
    config = tmp_path / "c.toml"
    config.write_text(
        f'db = "{db}"\n[cache]\nmodel = "tiny:gemma2"\ncoder = "{coder_dir}"\nseq_len = 32\nn_tokens = 2048\n'
        'batch_size = 8\ndevice = "cpu"\ncheck_reconstruction = false\n[batch]\nstages = ["cache"]\n'
    )
    before = db.read_bytes()
    r = cli("batch", str(config))  # resuming would add right chunks to wrong ones
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert "wrong site" in r.stderr and "--redo cache" in r.stderr
    assert db.read_bytes() == before  # byte for byte

    r = cli("upgrade", str(db))
    assert r.returncode == 0, r.stderr
    assert (
        f"schema v{SCHEMA_VERSION}" in r.stdout
        and "warning: the activations at blocks.1.hook_mlp_out come from the wrong site" in r.stdout
    )
    r = cli("info", str(db))
    assert (
        r.returncode == 0
        and "warning     the activations at blocks.1.hook_mlp_out come from the wrong site" in r.stdout
    )
    browser = Browser.open(db)
    try:
        assert "wrong site" in run_header(browser.monitor()).plain
    finally:
        browser.close()

    r = cli("batch", str(config), "--redo", "cache")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "old.db.before-redo-1").read_bytes()[:16] == b"SQLite format 3\x00"  # nothing deleted
    with ActivationStore.open(db, readonly=True) as store:
        assert store.provenance["forward_sites"] == "2" and store.n_tokens() == 64 * 31
    r = cli("info", str(db))
    assert r.returncode == 0 and "warning" not in r.stdout and "forward     plain HF forward: gemma2 layout" in r.stdout


def test_an_old_llama_cache_is_not_flagged(tmp_path):
    """Pre-norm families read the same site before and after the fix: nothing to say about their old caches."""
    from helpers.schema import to_schema_10

    coder_dir = saelens_sae(tmp_path / "sae", 64, "blocks.1.hook_mlp_out")
    db = tmp_path / "llama.db"
    run_cache(cache_cfg("llama", "", coder_dir), str(db))
    with contextlib.closing(sqlite3.connect(db)) as c, c:  # closed: the WAL folded in before the file is copied
        to_schema_10(c)
    r = cli("upgrade", str(db))
    assert r.returncode == 0 and "warning" not in r.stdout, r.stdout + r.stderr
    with sqlite3.connect(db) as c:
        assert c.execute("select model_type, forward_stale from provenance").fetchone() == ("llama", None)
