"""Each checkpoint format's encode against the formula, on weights the test writes itself."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from autointerp.engine.activations.coders import CoderError, NeuronCoder, load_coder

D, M, K = 12, 40, 5
g = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=g)


def dense(sp, n):
    out = torch.zeros(n, M if sp.latents.numel() == 0 or sp.latents.max() < M else int(sp.latents.max()) + 1)
    out[sp.rows, sp.latents] = sp.values
    return out


def topk_dense(pre, k):
    out = torch.zeros_like(pre)
    v, i = pre.topk(k, dim=-1)
    out.scatter_(1, i, v)
    return out.clamp_min(0)


def write_sparsify(folder, transcode=False, activation="topk"):
    folder.mkdir(parents=True)
    w = {"encoder.weight": rand(M, D), "encoder.bias": rand(M), "W_dec": rand(M, D), "b_dec": rand(D)}
    save_file(w, str(folder / "sae.safetensors"))
    (folder / "cfg.json").write_text(
        json.dumps({"num_latents": M, "k": K, "activation": activation, "transcode": transcode, "d_in": D})
    )
    return w


@pytest.mark.parametrize("transcode", [False, True])
def test_sparsify_topk(tmp_path, transcode):
    w = write_sparsify(tmp_path / "layers.3", transcode)
    coder = load_coder(tmp_path, hookpoint="layers.3")
    assert (coder.kind, coder.hook, coder.num_latents, coder.transcoder) == ("sparsify", "layers.3", M, transcode)
    x = rand(30, D)
    sae_in = x if transcode else x - w["b_dec"]
    expected = topk_dense(torch.relu(sae_in @ w["encoder.weight"].T + w["encoder.bias"]), K)
    got = dense(coder.encode(x), 30)
    torch.testing.assert_close(got, expected)
    assert (got > 0).sum(1).max() <= K


def test_sparsify_groupmax(tmp_path):
    w = write_sparsify(tmp_path / "layers.1", activation="groupmax")
    coder = load_coder(tmp_path / "layers.1")
    x = rand(7, D)
    pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
    expected = torch.zeros_like(pre)
    for r in range(7):
        for grp in range(K):
            block = pre[r, grp * (M // K) : (grp + 1) * (M // K)]
            j = int(block.argmax())
            expected[r, grp * (M // K) + j] = block[j]
    torch.testing.assert_close(dense(coder.encode(x), 7), expected)


def write_saelens(folder, cfg, threshold=True):
    folder.mkdir(parents=True)
    w = {"W_enc": rand(D, M), "b_enc": rand(M), "W_dec": rand(M, D), "b_dec": rand(D)}
    if threshold:
        w["threshold"] = rand(M).abs()
    save_file(w, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(dict({"d_in": D, "d_sae": M}, **cfg)))
    return w


def test_saelens_standard_with_b_dec_and_norm(tmp_path):
    w = write_saelens(
        tmp_path / "s",
        {
            "architecture": "standard",
            "apply_b_dec_to_input": True,
            "normalize_activations": "constant_norm_rescale",
            "hook_name": "blocks.2.hook_resid_pre",
        },
        threshold=False,
    )
    coder = load_coder(tmp_path / "s")
    assert coder.hook == "blocks.2.hook_resid_pre"
    x = rand(9, D) * 7
    xn = x * math.sqrt(D) / x.norm(dim=-1, keepdim=True)
    expected = torch.relu((xn - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(dense(coder.encode(x), 9), expected)


def test_saelens_jumprelu_no_b_dec(tmp_path):
    w = write_saelens(
        tmp_path / "j",
        {"architecture": "jumprelu", "apply_b_dec_to_input": False, "metadata": {"hook_name": "blocks.1.hook_mlp_out"}},
    )
    coder = load_coder(tmp_path / "j")
    assert coder.hook == "blocks.1.hook_mlp_out"
    x = rand(9, D)
    pre = x @ w["W_enc"] + w["b_enc"]
    expected = torch.relu(pre) * (pre > w["threshold"])
    torch.testing.assert_close(dense(coder.encode(x), 9), expected)


def test_saelens_flat_topk(tmp_path):
    w = write_saelens(
        tmp_path / "t",
        {
            "activation_fn_str": "topk",
            "activation_fn_kwargs": {"k": K},
            "apply_b_dec_to_input": True,
            "hook_name": "blocks.0.hook_resid_post",
        },
        threshold=False,
    )
    coder = load_coder(tmp_path / "t")
    x = rand(6, D)
    expected = topk_dense((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"], K)
    torch.testing.assert_close(dense(coder.encode(x), 6), expected)


def test_gemmascope_npz(tmp_path):
    w = {
        k: rand(*s).numpy()
        for k, s in {"W_enc": (D, M), "W_dec": (M, D), "b_enc": (M,), "b_dec": (D,), "threshold": (M,)}.items()
    }
    w["threshold"] = np.abs(w["threshold"])
    np.savez(tmp_path / "params.npz", **w)
    coder = load_coder(tmp_path / "params.npz", hookpoint="blocks.4.hook_resid_post")
    assert coder.kind == "gemmascope" and coder.hook == "blocks.4.hook_resid_post"
    x = rand(8, D)
    pre = x @ torch.from_numpy(w["W_enc"]) + torch.from_numpy(w["b_enc"])  # no b_dec subtraction
    expected = torch.relu(pre) * (pre > torch.from_numpy(w["threshold"]))
    torch.testing.assert_close(dense(coder.encode(x), 8), expected)


def test_gemmascope_refuses_pickled_npz(tmp_path):
    np.savez(tmp_path / "params.npz", W_enc=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(CoderError, match="not a readable npz"):
        load_coder(tmp_path / "params.npz")


def test_neurons_topk_and_all_positive():
    x = rand(10, M)
    torch.testing.assert_close(dense(NeuronCoder(M, "blocks.0.mlp.hook_post", K).encode(x), 10), topk_dense(x, K))
    torch.testing.assert_close(dense(NeuronCoder(M, "blocks.0.mlp.hook_post", None).encode(x), 10), x.clamp_min(0))


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CoderError, match="does not exist"):
        load_coder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoderError, match="cannot tell the checkpoint format"):
        load_coder(tmp_path / "empty")
    write_sparsify(tmp_path / "trunc")
    blob = (tmp_path / "trunc" / "sae.safetensors").read_bytes()
    (tmp_path / "trunc" / "sae.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CoderError, match="not a readable safetensors"):
        load_coder(tmp_path / "trunc")
    write_sparsify(tmp_path / "badcfg")
    (tmp_path / "badcfg" / "cfg.json").write_text("{not json")
    with pytest.raises(CoderError, match="not valid JSON"):
        load_coder(tmp_path / "badcfg")
    folder = tmp_path / "shape"
    folder.mkdir()
    save_file(
        {"encoder.weight": rand(M, D), "encoder.bias": rand(M), "W_dec": rand(M, D + 1), "b_dec": rand(D)},
        str(folder / "sae.safetensors"),
    )
    (folder / "cfg.json").write_text(json.dumps({"k": K}))
    with pytest.raises(CoderError, match="W_dec"):
        load_coder(folder)
