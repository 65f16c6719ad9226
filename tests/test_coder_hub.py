"""Coders named by hub (`saelens:RELEASE/SAE_ID`, `hf:ORG/REPO[/PATH]`), offline.

Each test lays out a Hugging Face cache in huggingface_hub's own format in a tmp dir
(`models--ORG--NAME/snapshots/<commit>/<path>`, `refs/main` holding the commit) with small random-weight checkpoints,
and reads it with HF_HUB_OFFLINE=1. The releases and SAE ids are SAELens's real ones, from the installed sae-lens
package's directory; only the tensors' shapes are made up (d_in 64).
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.errors import error_of as one_line_error
from helpers.hub import REV, lay_out, tiny_model
from safetensors.torch import save

from autointerp.engine.activations.coders import CoderError, hub, load_coder
from autointerp.engine.activations.coders.base import hash_files
from autointerp.engine.activations.setup import load_configured_coder, prepare, provenance, settle_hub_coder
from autointerp.engine.commands.cli import main
from autointerp.engine.config import CacheConfig

pytest.importorskip("yaml")
if importlib.util.find_spec("sae_lens") is None:  # installed with --no-deps (README, .ci/run)
    pytest.skip("sae-lens is not installed (pip install --no-deps 'sae-lens>=6.50')", allow_module_level=True)

D_IN, D_SAE = 64, 128
JB = "saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre"  # jbloom/GPT2-Small-SAEs-Reformatted, SAELens format
JB_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
GS = "saelens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical"  # google/gemma-scope-2b-pt-res, npz
GS_REPO, GS_PATH = "google/gemma-scope-2b-pt-res", "layer_12/width_16k/average_l0_82"
SPARSIFY_REPO = "EleutherAI/sae-pythia-70m-deduped-test"


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed + sum(shape)))


def saelens_cfg(hook: str, model: str = "gpt2-small") -> bytes:
    """A cfg.json as jbloom's GPT-2 SAEs have it: flat, from before SAELens 6 (`hook_point`, `model_name`)."""
    cfg = {"model_name": model, "hook_point": hook, "hook_point_layer": 8, "d_in": D_IN, "d_sae": D_SAE}
    return json.dumps(cfg).encode()


def saelens_weights() -> bytes:
    return save({"W_enc": rand(D_IN, D_SAE), "W_dec": rand(D_SAE, D_IN), "b_enc": rand(D_SAE), "b_dec": rand(D_IN)})


def gemma_npz() -> bytes:
    buf = io.BytesIO()
    arrays = {"W_enc": rand(D_IN, D_SAE), "W_dec": rand(D_SAE, D_IN), "b_enc": rand(D_SAE), "b_dec": rand(D_IN)}
    np.savez(buf, threshold=np.full(D_SAE, 0.5, np.float32), **{k: v.numpy() for k, v in arrays.items()})
    return buf.getvalue()


def sparsify_files(hookpoint: str) -> dict[str, bytes]:
    cfg = {"activation": "topk", "expansion_factor": 2, "num_latents": D_SAE, "k": 8, "d_in": D_IN}
    w = {
        "encoder.weight": rand(D_SAE, D_IN),
        "encoder.bias": rand(D_SAE),
        "W_dec": rand(D_SAE, D_IN),
        "b_dec": rand(D_IN),
    }
    return {f"{hookpoint}/cfg.json": json.dumps(cfg).encode(), f"{hookpoint}/sae.safetensors": save(w)}


def jb_cache(cache: Path, weights: bool = True) -> Path:
    files = {"blocks.8.hook_resid_pre/cfg.json": saelens_cfg("blocks.8.hook_resid_pre")}
    if weights:
        files["blocks.8.hook_resid_pre/sae_weights.safetensors"] = saelens_weights()
    return lay_out(cache, JB_REPO, files)


def error_of(fn, *args) -> str:
    return one_line_error(fn, *args, error=CoderError)


# ---- saelens: -----------------------------------------------------------------------------------------------------


def test_saelens_format_resolves_fills_model_and_hook_and_loads(hub_cache, requested):
    snap = jb_cache(hub_cache)
    cfg = CacheConfig(coder=JB)
    settle_hub_coder(cfg)
    # gpt2-small (SAELens's TransformerLens name) -> gpt2; the hook from cfg.json's pre-6.0 `hook_point`
    assert (cfg.model, cfg.hook, cfg.coder) == ("gpt2", "blocks.8.hook_resid_pre", f"{JB}@{REV}")
    assert requested == ["blocks.8.hook_resid_pre/cfg.json"]  # the identity needed no weights
    coder = load_configured_coder(cfg, None)
    assert requested[-1] == "blocks.8.hook_resid_pre/sae_weights.safetensors"
    folder = snap / "blocks.8.hook_resid_pre"
    assert (coder.kind, coder.d_in, coder.num_latents, coder.path) == ("saelens", D_IN, D_SAE, f"{JB}@{REV}")
    assert coder.hook == "blocks.8.hook_resid_pre"
    assert coder.content_hash == hash_files([folder / "cfg.json", folder / "sae_weights.safetensors"])
    assert len(coder.encode(rand(5, D_IN, seed=3))) > 0
    # the recorded path loads the same files again (what `similarity` does with a database's coder_path)
    assert load_coder(coder.path).content_hash == coder.content_hash
    settle_hub_coder(cfg)  # idempotent: a pinned spec with its model and hook filled passes again
    assert cfg.coder == f"{JB}@{REV}"


@pytest.mark.parametrize("model", ["gpt2", "openai-community/gpt2", "gpt2-small", "GPT2"])
def test_model_names_of_the_same_model_match(hub_cache, model):
    jb_cache(hub_cache, weights=False)
    cfg = CacheConfig(coder=JB, model=model)
    settle_hub_coder(cfg)
    assert cfg.model == model


def test_gemma_scope_through_saelens_resolves_and_loads(hub_cache):
    lay_out(hub_cache, GS_REPO, {f"{GS_PATH}/params.npz": gemma_npz()})
    cfg = CacheConfig(coder=GS)
    settle_hub_coder(cfg)
    assert (cfg.model, cfg.hook) == ("google/gemma-2-2b", "blocks.12.hook_resid_post")  # hook from the path
    coder = load_configured_coder(cfg, None)
    assert (coder.kind, coder.d_in, coder.num_latents, coder.hook) == ("gemmascope", D_IN, D_SAE, cfg.hook)
    assert coder.path == f"{GS}@{REV}"


def test_gemma_scope_folder_by_hf(hub_cache):
    lay_out(hub_cache, GS_REPO, {f"{GS_PATH}/params.npz": gemma_npz()})
    cfg = CacheConfig(coder=f"hf:{GS_REPO}/{GS_PATH}", model="gemma-2-2b")
    settle_hub_coder(cfg)
    assert (cfg.model, cfg.hook) == ("gemma-2-2b", "blocks.12.hook_resid_post")
    coder = load_configured_coder(cfg, None)
    assert coder.kind == "gemmascope" and coder.path == f"hf:{GS_REPO}/{GS_PATH}@{REV}"


def test_gemma_scope_with_a_llama_model_is_refused_before_any_weights(hub_cache, requested):
    lay_out(hub_cache, GS_REPO, {})  # the repo's commit is known; params.npz is not there (never fetched)
    cfg = CacheConfig(coder=GS, model="meta-llama/Llama-3.1-8B")
    message = error_of(settle_hub_coder, cfg)
    assert "'gemma-2-2b'" in message and "'meta-llama/Llama-3.1-8B'" in message and "google/gemma-2-2b" in message
    assert "cache" not in message and requested == []


def test_model_mismatch_is_refused_before_the_weights_are_fetched(hub_cache, requested):
    jb_cache(hub_cache, weights=False)  # only cfg.json: reaching for the weights would say they are not cached
    cfg = CacheConfig(coder=JB, model="EleutherAI/pythia-70m-deduped")
    message = error_of(prepare, cfg)
    assert "'gpt2-small'" in message and "pythia-70m-deduped" in message and "not in the local" not in message
    assert requested == ["blocks.8.hook_resid_pre/cfg.json"]


def test_hook_is_checked_against_the_checkpoint(hub_cache):
    jb_cache(hub_cache, weights=False)
    message = error_of(settle_hub_coder, CacheConfig(coder=JB, hook="blocks.9.hook_resid_pre"))
    assert "'blocks.8.hook_resid_pre'" in message and "'blocks.9.hook_resid_pre'" in message
    cfg = CacheConfig(coder=JB, hook="blocks.7.hook_resid_post")  # the same residual stream
    settle_hub_coder(cfg)
    assert cfg.hook == "blocks.7.hook_resid_post"


def test_unknown_release_or_sae_id_names_the_closest(hub_cache):
    message = error_of(settle_hub_coder, CacheConfig(coder="saelens:gpt2-small-res-jbb/blocks.8.hook_resid_pre"))
    assert "unknown SAELens release 'gpt2-small-res-jbb'" in message and "gpt2-small-res-jb" in message
    message = error_of(settle_hub_coder, CacheConfig(coder="saelens:gpt2-small-res-jb/blocks.8.hook_resid_prx"))
    assert "unknown SAE id" in message and "blocks.8.hook_resid_pre" in message
    message = error_of(settle_hub_coder, CacheConfig(coder="saelens:gpt2-small-res-jb"))
    assert "saelens:RELEASE/SAE_ID" in message


def test_a_converter_we_cannot_read_is_one_line_naming_it(hub_cache):
    directory = hub.saelens_directory()
    release = next(
        r for r, e in directory.items() if e.conversion_func not in (None, "gemma_2", "dictionary_learning_1")
    )
    entry = directory[release]
    spec = f"saelens:{release}/{next(iter(entry.saes_map))}"
    message = error_of(settle_hub_coder, CacheConfig(coder=spec))
    assert repr(entry.conversion_func) in message


@pytest.mark.parametrize(
    "spec", [JB, GS, f"hf:{GS_REPO}/{GS_PATH}", f"hf:{SPARSIFY_REPO}", f"hf:{SPARSIFY_REPO}/layers.3"]
)
def test_not_cached_while_offline_is_one_clear_line(hub_cache, spec):
    message = error_of(settle_hub_coder, CacheConfig(coder=spec))
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE" in message


def test_weights_not_cached_while_offline_is_one_clear_line(hub_cache):
    jb_cache(hub_cache, weights=False)
    cfg = CacheConfig(coder=JB)
    settle_hub_coder(cfg)  # cfg.json is cached: the identity is known
    message = error_of(load_configured_coder, cfg, None)
    assert "sae_weights.safetensors is not in the local Hugging Face cache" in message


# ---- hf: sparsify -------------------------------------------------------------------------------------------------


def sparsify_cache(cache: Path) -> Path:
    files = {"config.json": json.dumps({"model": "EleutherAI/pythia-70m-deduped"}).encode()}
    files.update(sparsify_files("layers.3"))
    files.update(sparsify_files("layers.4"))
    return lay_out(cache, SPARSIFY_REPO, files)


@pytest.mark.parametrize("hook", ["layers.4", "blocks.4.hook_resid_post"])
def test_sparsify_run_on_the_hub_picks_the_hookpoint(hub_cache, hook):
    snap = sparsify_cache(hub_cache)
    cfg = CacheConfig(coder=f"hf:{SPARSIFY_REPO}", hook=hook)
    settle_hub_coder(cfg)
    assert cfg.model == "EleutherAI/pythia-70m-deduped"  # from the run folder's config.json
    assert (cfg.hook, cfg.coder) == (hook, f"hf:{SPARSIFY_REPO}/layers.4@{REV}")
    coder = load_configured_coder(cfg, None)
    assert (coder.kind, coder.hook, coder.num_latents) == ("sparsify", "layers.4", D_SAE)
    folder = snap / "layers.4"
    assert coder.content_hash == hash_files([folder / "cfg.json", folder / "sae.safetensors"])


def test_sparsify_run_without_a_hook_names_its_hookpoints(hub_cache):
    sparsify_cache(hub_cache)
    message = error_of(settle_hub_coder, CacheConfig(coder=f"hf:{SPARSIFY_REPO}"))
    assert "set hook to one of layers.3, layers.4" in message
    cfg = CacheConfig(coder=f"hf:{SPARSIFY_REPO}/layers.3@{REV}", model="EleutherAI/pythia-70m-deduped")
    settle_hub_coder(cfg)  # a hookpoint folder named in the spec, at a pinned revision
    assert cfg.hook == "layers.3"
    message = error_of(settle_hub_coder, CacheConfig(coder=f"hf:{SPARSIFY_REPO}", model="gpt2", hook="layers.3"))
    assert "'EleutherAI/pythia-70m-deduped'" in message


# ---- the command line and a whole prepare ---------------------------------------------------------------------------


def test_cache_command_with_a_mismatching_model_exits_2_with_one_line(hub_cache, tmp_path):
    lay_out(hub_cache, GS_REPO, {})
    db = tmp_path / "x.db"
    res = CliRunner().invoke(main, ["cache", "--coder", GS, "--model", "meta-llama/Llama-3.1-8B", "--db", str(db)])
    assert res.exit_code == 2, (res.exit_code, res.stderr, res.stdout)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "gemma-2-2b" in lines[0], res.stderr
    assert not db.exists()


def test_prepare_runs_the_sae_on_the_model_it_names(hub_cache, tmp_path):
    """`model` left unset: the SAE's own (gpt2, here a tiny stand-in in the hub cache) is loaded, at its hook."""
    snap = lay_out(
        hub_cache,
        JB_REPO,
        {
            "blocks.1.hook_resid_pre/cfg.json": saelens_cfg("blocks.1.hook_resid_pre"),
            "blocks.1.hook_resid_pre/sae_weights.safetensors": saelens_weights(),
        },
    )
    tiny_model(lay_out(hub_cache, "gpt2", {}), "gpt2", 2)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{i % 98} the cat sat" for i in range(200)))
    cfg = CacheConfig(
        coder="saelens:gpt2-small-res-jb/blocks.1.hook_resid_pre", corpus=str(corpus), device="cpu", dtype="float32"
    )
    parts = prepare(cfg)
    assert (parts.model.name, parts.hook, parts.coder.d_in) == ("gpt2", "blocks.1.hook_resid_pre", D_IN)
    prov = provenance(parts, cfg)
    folder = snap / "blocks.1.hook_resid_pre"
    assert prov["coder_path"] == f"saelens:gpt2-small-res-jb/blocks.1.hook_resid_pre@{REV}"
    assert prov["coder_hash"] == hash_files([folder / "cfg.json", folder / "sae_weights.safetensors"])
    assert prov["config"]["model"] == "gpt2" and prov["config"]["coder"] == prov["coder_path"]
