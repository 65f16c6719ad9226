"""`autointerp check` and the reconstruction check `cache` / `batch` run on their first batch: the embedded SmolLM2 +
shipped SAE reconstructs its hook; the same SAE read at another layer's residual stream (same width) is unusable,
and caching it stops with one `error:` line and no database, unless --no-check. Decoders against their formulas.

The commands run in this process (click's CliRunner) with the session's model: SubjectModel.load is patched to
return it, so no test loads a second copy (~10 s each). Samples are a few hundred tokens of 64-token sequences."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch
from helpers.cli import invoke_cli
from safetensors.torch import save_file

from autointerp.engine.activations.coders import NeuronCoder, load_coder
from autointerp.engine.activations.coders.base import SparseActs
from autointerp.engine.activations.model import SubjectModel
from autointerp.engine.config import load_config

WRONG_HOOK = "blocks.25.hook_resid_post"  # the embedded SAE reads blocks.15.hook_resid_post; the same width (576)
SMALL = ["--seq-len", "64", "--batch-size", "4"]


@pytest.fixture(scope="module", autouse=True)
def one_model(subject_model):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SubjectModel, "load", classmethod(lambda cls, *a, **k: subject_model))
        yield subject_model


def check_json(*args) -> tuple[int, dict]:
    r = invoke_cli("check", "--json", "--n-tokens", "256", *SMALL, *args)
    assert r.stderr == "", r.stderr
    return r.returncode, json.loads(r.stdout)


@pytest.fixture(scope="module")
def default_check(one_model):
    return check_json()


@pytest.fixture(scope="module")
def wrong_check(one_model):
    return check_json("--hook", WRONG_HOOK)


def as_text(r: dict) -> str:
    """The command's text for the same figures (format_check over the JSON's fields)."""
    from autointerp.engine.activations.reconstruction import ReconstructionCheck
    from autointerp.engine.commands.check import format_check

    return format_check(ReconstructionCheck(**{f.name: r[f.name] for f in dataclasses.fields(ReconstructionCheck)}))


def digest(path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


# ---- the check ------------------------------------------------------------------------------------------------


def test_embedded_default_reconstructs_its_hook(default_check):
    code, r = default_check
    assert code == 0
    for key in (
        "hook",
        "forward",
        "forward_reason",
        "d_in",
        "num_latents",
        "coder_kind",
        "fvu",
        "loss_clean",
        "loss_spliced",
        "loss_zero",
        "loss_recovered",
        "l0",
        "dead_fraction",
        "verdict",
        "advice",
        "thresholds",
        "seconds",
    ):
        assert key in r, key
    assert (r["hook"], r["target_hook"], r["coder_kind"], r["d_in"], r["applies"]) == (
        "blocks.15.hook_resid_post",
        "blocks.15.hook_resid_post",
        "sparsify",
        576,
        True,
    )
    assert r["forward"] in ("plain", "bridge") and r["n_tokens"] == 4 * 63
    assert r["fvu"] < 0.4 and r["loss_recovered"] > 0.8 and r["verdict"] == "good"
    assert r["loss_clean"] < r["loss_spliced"] < r["loss_zero"]
    assert r["l0"] == pytest.approx(32.0) and 0 < r["dead_fraction"] < 1  # TopK, k = 32
    assert r["bridge_difference"] < 1e-3  # the bridge's activation at the hook is the one the cache reads


def test_check_prints_the_figures_and_a_verdict(default_check):
    text = as_text(default_check[1])
    for words in ("blocks.15.hook_resid_post", "forward", "FVU", "clean", "spliced", "zero-ablated", "L0", "good"):
        assert words in text, words


def test_a_wrong_hook_is_unusable_and_says_what_to_check(wrong_check):
    code, r = wrong_check
    assert code == 1  # a script can gate on it
    assert r["verdict"] == "unusable" and r["fvu"] > 0.5 and r["problems"]
    assert any("layers.15" in a for a in r["advice"])  # the hook the checkpoint names
    text = as_text(r)
    assert "unusable" in text and "wrong hook" in text and "check:" in text


def test_neurons_say_reconstruction_does_not_apply():
    code, r = check_json("--coder", "neurons", "--hook", "blocks.3.mlp.hook_post")
    assert code == 0
    assert (r["applies"], r["verdict"], r["fvu"], r["loss_spliced"]) == (False, "not applicable", None, None)
    assert r["l0"] == pytest.approx(32.0)  # neurons_k
    text = invoke_cli("check", "--n-tokens", "64", *SMALL, "--coder", "neurons", "--hook", "blocks.3.mlp.hook_post")
    assert text.returncode == 0 and "reconstruction does not apply" in text.stdout


# ---- cache and batch stop before the first write ----------------------------------------------------------------


def assert_one_error(r, *words):
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_cache_refuses_an_unusable_reconstruction_unless_no_check(tmp_path):
    db = tmp_path / "c.db"
    args = ["cache", "--db", db, "--hook", WRONG_HOOK, "--n-tokens", "256", *SMALL]
    assert_one_error(invoke_cli(*args), "unusable", WRONG_HOOK, "--no-check")
    assert not db.exists() and list(tmp_path.iterdir()) == []  # no database, not even an empty one
    r = invoke_cli(*args, "--no-check")
    assert r.returncode == 0, r.stderr
    assert db.exists()


def test_batch_refuses_it_too_and_leaves_a_database_byte_for_byte(tmp_path):
    from autointerp.store.db import ActivationStore

    db, cfg = tmp_path / "b.db", tmp_path / "b.toml"
    ActivationStore.open(db, create=True).close()  # a database with no cache yet
    before = digest(db)
    cfg.write_text(
        f'db = "{db}"\n[batch]\nstages = ["cache"]\n[cache]\nhook = "{WRONG_HOOK}"\nseq_len = 64\nn_tokens = 256\n'
        "batch_size = 4\n"
    )
    assert_one_error(invoke_cli("batch", cfg), "unusable")
    assert digest(db) == before
    assert invoke_cli("batch", cfg, "--no-check", "--dry-run").returncode == 0  # the flag is known
    cfg.write_text(cfg.read_text() + "check_reconstruction = false\n")
    assert load_config(cfg).cache.check_reconstruction is False


# ---- decoders against their formulas ----------------------------------------------------------------------------

g = torch.Generator().manual_seed(0)


def dense_of(acts: SparseActs, n: int, m: int) -> torch.Tensor:
    out = torch.zeros(n, m)
    out[acts.rows, acts.latents] = acts.values
    return out


@pytest.mark.parametrize("skip", [False, True])
def test_sparsify_decode_is_the_decoder_formula(tmp_path, skip):
    d, m = 6, 20
    w = {
        "encoder.weight": torch.randn(m, d, generator=g),
        "encoder.bias": torch.randn(m, generator=g),
        "W_dec": torch.randn(m, d, generator=g),
        "b_dec": torch.randn(d, generator=g),
    }
    if skip:
        w["W_skip"] = torch.randn(d, d, generator=g)
    folder = tmp_path / "layers.2.mlp"
    folder.mkdir()
    save_file(w, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"num_latents": m, "k": 4, "transcode": skip, "d_in": d}))
    coder = load_coder(folder)
    x = torch.randn(9, d, generator=g)
    acts = coder.encode(x)
    expected = dense_of(acts, 9, m) @ w["W_dec"] + w["b_dec"] + (x @ w["W_skip"].T if skip else 0)
    torch.testing.assert_close(coder.decode(acts, 9, x), expected)


@pytest.mark.parametrize("normalize", ["none", "constant_norm_rescale", "expected_average_only_in", "layer_norm"])
def test_saelens_decode_undoes_its_input_normalisation(tmp_path, normalize):
    """An SAE that is exactly the identity ([I, -I] in, [I; -I] out, ReLU): whatever the input normalisation,
    decode(encode(x)) must give x back in the hook's own units."""
    d = 5
    eye = torch.eye(d)
    w = {
        "W_enc": torch.cat([eye, -eye], 1),
        "b_enc": torch.zeros(2 * d),
        "W_dec": torch.cat([eye, -eye], 0),
        "b_dec": torch.zeros(d),
    }
    save_file(w, str(tmp_path / "sae_weights.safetensors"))
    cfg = {"d_in": d, "d_sae": 2 * d, "architecture": "standard", "normalize_activations": normalize}
    if normalize == "expected_average_only_in":
        cfg["norm_scaling_factor"] = 0.25
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    coder = load_coder(tmp_path)
    x = torch.randn(7, d, generator=g) * 30 + 3
    torch.testing.assert_close(coder.decode(coder.encode(x), 7, x), x, rtol=1e-4, atol=1e-4)


def test_neuron_decode_is_the_kept_activations():
    coder = NeuronCoder(16, "blocks.0.mlp.hook_post", 3)
    x = torch.randn(5, 16, generator=g)
    kept = torch.zeros_like(x)
    v, i = x.topk(3, dim=-1)
    kept.scatter_(1, i, v)
    torch.testing.assert_close(coder.decode(coder.encode(x), 5), kept.clamp_min(0))


def test_decode_never_builds_a_dense_latent_matrix():
    """A wide coder's decode: the sparse product, equal to the dense one on a small case."""
    from autointerp.engine.activations.coders.base import sparse_decode

    w_dec = torch.randn(100_000, 8, generator=g)
    acts = SparseActs(torch.tensor([0, 0, 2]), torch.tensor([99_999, 5, 7]), torch.tensor([1.5, -2.0, 0.5]))
    out = sparse_decode(acts, 3, w_dec)
    expected = torch.stack([1.5 * w_dec[99_999] - 2.0 * w_dec[5], torch.zeros(8), 0.5 * w_dec[7]])
    torch.testing.assert_close(out, expected)
