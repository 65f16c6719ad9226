"""Hook points of a model loaded from a local Hugging Face folder, against plain transformers hooks."""

import pytest
import torch

from autointerp.engine.activations.model import ModelError, SubjectModel, gguf_as_safetensors, hook_from_module_path
from autointerp.engine.defaults import smollm2_gguf


@pytest.fixture(scope="module")
def folder():
    return gguf_as_safetensors(smollm2_gguf())[0]


@pytest.fixture(scope="module")
def model(folder):
    # A local directory, not the "embedded" shortcut.
    loaded = SubjectModel.load(str(folder))
    assert loaded.name == str(folder)
    return loaded


@pytest.fixture(scope="module")
def hf_reference(folder):
    """Activations grabbed from the HF modules themselves for block 2 on fixed tokens."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    layer = hf.model.layers[2]
    got = {}
    layer.register_forward_pre_hook(
        lambda m, a, kw: got.__setitem__("resid_pre", (a[0] if a else kw["hidden_states"])), with_kwargs=True
    )
    layer.register_forward_hook(lambda m, i, o: got.__setitem__("resid_post", o[0] if isinstance(o, tuple) else o))
    layer.self_attn.register_forward_hook(lambda m, i, o: got.__setitem__("attn_out", o[0]))
    layer.mlp.register_forward_hook(lambda m, i, o: got.__setitem__("mlp_out", o))
    layer.mlp.register_forward_pre_hook(lambda m, i: got.__setitem__("mlp_in", i[0]))
    layer.mlp.down_proj.register_forward_hook(lambda m, i, o: got.__setitem__("mlp_post", i[0]))
    tokens = torch.tensor([[1, 504, 3417, 282, 3118, 314, 253, 1341, 30, 2, 378, 1345]])
    with torch.inference_mode():
        hf(tokens)
    return tokens, got


@pytest.mark.parametrize(
    "hook, key",
    [
        ("blocks.2.hook_resid_pre", "resid_pre"),
        ("blocks.2.hook_resid_post", "resid_post"),
        ("layers.2", "resid_post"),
        ("blocks.2.hook_attn_out", "attn_out"),
        ("layers.2.self_attn", "attn_out"),
        ("blocks.2.hook_mlp_out", "mlp_out"),
        ("layers.2.mlp", "mlp_out"),
        ("blocks.2.mlp.hook_post", "mlp_post"),
    ],
)
def test_local_folder_hooks_match_hf_modules(model, hf_reference, hook, key):
    tokens, ref = hf_reference
    name = hook_from_module_path(hook)
    model.check_hook(name)
    acts = model.hook_activations(tokens, name)
    assert acts.shape == ref[key].shape
    assert acts.shape[-1] == model.hook_width(name)
    torch.testing.assert_close(acts, ref[key], rtol=1e-4, atol=1e-4)


def test_transcoder_reads_mlp_input_and_bad_hooks_refused(model):
    assert hook_from_module_path("layers.7.mlp", transcoder=True) == "blocks.7.mlp.hook_in"
    with pytest.raises(ModelError, match="only 30 blocks"):
        model.check_hook("blocks.30.hook_resid_post")
    with pytest.raises(ModelError, match="unknown hook point 'blocks.2.hook_nope'"):
        model.check_hook("blocks.2.hook_nope")


@pytest.fixture(scope="module")
def converted_at_once(tmp_path_factory):
    """A fresh machine (an empty model cache) where two processes start together, each converting the embedded
    GGUF: a plain conversion, and a `cache` command whose hook the model lacks. -> (cache folder, their results)"""
    import os
    import subprocess
    import sys

    cache = tmp_path_factory.mktemp("fresh_cache")
    env = dict(os.environ, AUTOINTERP_CACHE_DIR=str(cache), HF_HUB_OFFLINE="1")
    code = (
        "from autointerp.engine.defaults import smollm2_gguf; from autointerp.engine.activations.model import gguf_as_safetensors;"
        "print(gguf_as_safetensors(smollm2_gguf())[0])"
    )
    tiny = ["--seq-len", "32", "--n-tokens", "64", "--batch-size", "2"]
    bad_hook = ["-m", "autointerp.engine.commands.cli", "cache", "--db", str(cache / "x.db")]
    bad_hook += ["--hook", "blocks.99.hook_resid_post", *tiny]
    procs = [
        subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in (["-c", code], bad_hook)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    return cache, [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outs)]


def test_two_processes_converting_the_same_gguf_at_once_both_succeed(folder, converted_at_once):
    """Each dequantises the GGUF into its own temporary folder, one rename wins, the other uses the winner's
    folder."""
    from safetensors.torch import load_file

    cache, (plain, _) = converted_at_once
    assert plain.returncode == 0, plain.stderr[-1500:]
    made = cache / "models" / folder.name
    assert plain.stdout.strip() == str(made)
    assert [p.name for p in (cache / "models").iterdir()] == [folder.name]  # no temporary folder left
    ours, ref = load_file(made / "model.safetensors"), load_file(folder / "model.safetensors")
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)


def test_the_first_dequantisation_prints_only_the_error(converted_at_once):
    """A fresh machine converts the embedded GGUF once; an error after that is still the only line on stderr."""
    cache, (_, r) = converted_at_once
    assert r.returncode == 2 and r.stderr.splitlines() == [r.stderr.strip()], r.stderr[-3000:]
    assert "only 30 blocks" in r.stderr and "Converting" not in r.stderr
    assert (cache / "models").is_dir() and not (cache / "x.db").exists()


def test_block_hooks_take_the_plain_hf_path_which_stops_at_the_block(model, hf_reference):
    """The cache's hot path: a hook on the plain HF module (no TransformerLens wrappers), the forward stopped right
    after it. It gives the HF module's own values, and what the bridge gives to within float error."""
    tokens, ref = hf_reference
    later = model.plain.get_decoder().layers[3]
    calls = []
    handle = later.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        for hook, key in (
            ("blocks.2.hook_resid_pre", "resid_pre"),
            ("blocks.2.hook_resid_post", "resid_post"),
            ("blocks.2.hook_attn_out", "attn_out"),
            ("blocks.2.hook_mlp_out", "mlp_out"),
            ("blocks.2.mlp.hook_in", "mlp_in"),
            ("blocks.2.mlp.hook_post", "mlp_post"),
        ):
            assert model._plain_site(hook) is not None and model.forward_kind(hook) == "plain", hook
            acts = model.hook_activations(tokens, hook)
            assert torch.equal(acts, ref[key]), hook  # the HF module's own numbers
            torch.testing.assert_close(
                acts, model.hook_activations(tokens, hook, via_bridge=True), rtol=1e-3, atol=1e-3
            )
        assert calls == []  # block 3 never ran
    finally:
        handle.remove()
    # Read between attention and the MLP: no plain module gives it, the bridge serves it.
    assert model._plain_site("blocks.2.hook_resid_mid") is None
    assert model.forward_kind("blocks.2.hook_resid_mid") == "bridge"
