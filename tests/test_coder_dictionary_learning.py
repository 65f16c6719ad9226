"""dictionary_learning checkpoints (SAEBench's SAEs): `ae.pt` (a torch state dict) + `config.json`.

Each checkpoint here is written in the real format: a state dict with dictionary_learning's own key names for its
dict_class, saved with torch.save, and a config.json as its trainer writes it (`{"trainer": {...}, "buffer": {...}}`),
with small random weights for a d_in 64 model. Encoding is checked against the class's formula computed densely here.
The hub path lays out SAELens's real release `sae_bench_pythia70m_sweep_topk_ctx128_0730` (repo canrager/lm_sae) in
a Hugging Face cache read with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import importlib.util
import io
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from helpers.errors import error_of as one_line_error
from helpers.hub import REV, lay_out, tiny_model

from autointerp.engine.activations.coders import CoderError, detect_kind, hub, load_coder
from autointerp.engine.activations.coders.base import hash_files
from autointerp.engine.activations.coders.dictionary_learning import hook_from_name, hook_of
from autointerp.engine.activations.setup import load_configured_coder, prepare, provenance, settle_hub_coder
from autointerp.engine.config import CHOICES, CacheConfig

D_IN, D_SAE, K = 64, 256, 8
LM = "EleutherAI/pythia-70m-deduped"


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed * 1000 + sum(shape))) * scale


# ---- checkpoints in the real format -------------------------------------------------------------------------------


def state_dict(dict_class: str, *, threshold: float = 0.2) -> OrderedDict:
    """A state dict with the key names and shapes dictionary_learning's class saves (nn.Linear weights transposed:
    encoder.weight [M, d], decoder.weight [d, M]; W_enc [d, M] and W_dec [M, d] where the class holds parameters)."""
    enc, enc_b = rand(D_SAE, D_IN, seed=1, scale=0.3), rand(D_SAE, seed=2, scale=0.5)
    dec, dec_b = rand(D_IN, D_SAE, seed=3, scale=0.2), rand(D_IN, seed=4, scale=0.5)
    if dict_class == "AutoEncoder":
        return OrderedDict([("bias", dec_b), ("encoder.weight", enc), ("encoder.bias", enc_b), ("decoder.weight", dec)])
    if dict_class == "AutoEncoderNew":
        return OrderedDict(
            [("encoder.weight", enc), ("encoder.bias", enc_b), ("decoder.weight", dec), ("decoder.bias", dec_b)]
        )
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        return OrderedDict(
            [
                ("k", torch.tensor(K, dtype=torch.int)),
                ("threshold", torch.tensor(threshold)),
                ("decoder.weight", dec),
                ("encoder.weight", enc),
                ("encoder.bias", enc_b),
                ("b_dec", dec_b),
            ]
        )
    if dict_class == "AutoEncoderTopK-2024-07":  # the Triton-era class: decoder a parameter [M, d], k not saved
        return OrderedDict([("encoder.weight", enc), ("encoder.bias", enc_b), ("decoder", dec.T), ("b_dec", dec_b)])
    if dict_class == "MatryoshkaBatchTopKSAE":
        return OrderedDict(
            [
                ("k", torch.tensor(K, dtype=torch.int)),
                ("threshold", torch.tensor(threshold)),
                ("group_sizes", torch.tensor([64, 192])),
                ("W_enc", enc.T.contiguous()),
                ("b_enc", enc_b),
                ("W_dec", dec.T.contiguous()),
                ("b_dec", dec_b),
            ]
        )
    if dict_class == "JumpReluAutoEncoder":
        return OrderedDict(
            [
                ("W_enc", enc.T.contiguous()),
                ("b_enc", enc_b),
                ("W_dec", dec.T.contiguous()),
                ("b_dec", dec_b),
                ("threshold", rand(D_SAE, seed=5).abs() * 0.3),
            ]
        )
    if dict_class == "GatedAutoEncoder":
        return OrderedDict(
            [
                ("decoder_bias", dec_b),
                ("encoder.weight", enc),
                ("r_mag", rand(D_SAE, seed=6, scale=0.3)),
                ("gate_bias", rand(D_SAE, seed=7, scale=0.5)),
                ("mag_bias", rand(D_SAE, seed=8, scale=0.5)),
                ("decoder.weight", dec),
            ]
        )
    raise AssertionError(dict_class)


def trainer_config(dict_class: str, layer: int = 3, submodule_name: str | None = "resid_post_layer_3") -> dict:
    """config.json as dictionary_learning's training loop writes it: the trainer's config and the buffer's."""
    trainer = {
        "trainer_class": {"AutoEncoderTopK": "TopKTrainer", "BatchTopKSAE": "BatchTopKTrainer"}.get(
            dict_class, "StandardTrainer"
        ),
        "dict_class": dict_class,
        "lr": 0.0002,
        "steps": 48828,
        "seed": 0,
        "activation_dim": D_IN,
        "dict_size": D_SAE,
        "device": "cuda:0",
        "layer": layer,
        "lm_name": LM,
        "wandb_name": f"{dict_class}-{LM}-{submodule_name}",
        "submodule_name": submodule_name,
    }
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE"):
        trainer["k"] = K
    buffer = {
        "d_submodule": D_IN,
        "io": "out",
        "n_ctxs": 2000,
        "ctx_len": 128,
        "refresh_batch_size": 24,
        "out_batch_size": 2048,
        "device": "cuda:0",
    }
    return {"trainer": trainer, "buffer": buffer}


def checkpoint_files(dict_class: str, config: dict | None = None, state: dict | None = None) -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save(state if state is not None else state_dict(dict_class), buf)
    real_class = dict_class.removesuffix("-2024-07")
    cfg = config or trainer_config(real_class)
    return {"ae.pt": buf.getvalue(), "config.json": json.dumps(cfg, indent=4).encode()}


def write_checkpoint(folder: Path, dict_class: str, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in checkpoint_files(dict_class, **kw).items():
        (folder / name).write_bytes(data)
    return folder


# ---- each class's formula, computed densely --------------------------------------------------------------------


def reference(dict_class: str, w: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents [N, M], reconstruction [N, d]) as the dict class computes them."""
    if dict_class in ("AutoEncoder", "AutoEncoderNew"):
        shift = w["bias"] if dict_class == "AutoEncoder" else 0
        f = torch.relu((x - shift) @ w["encoder.weight"].T + w["encoder.bias"])
        out_bias = w["bias"] if dict_class == "AutoEncoder" else w["decoder.bias"]
        return f, f @ w["decoder.weight"].T + out_bias
    if dict_class in ("AutoEncoderTopK", "AutoEncoderTopK-2024-07"):
        a = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])  # b_dec subtracted first
        top = a.topk(K, dim=-1)
        f = torch.zeros_like(a).scatter_(-1, top.indices, top.values)
        W_dec = w["decoder.weight"].T if "decoder.weight" in w else w["decoder"]
        return f, f @ W_dec + w["b_dec"]
    if dict_class == "BatchTopKSAE":
        a = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
        f = a * (a > w["threshold"])
        return f, f @ w["decoder.weight"].T + w["b_dec"]
    if dict_class == "MatryoshkaBatchTopKSAE":
        a = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
        f = a * (a > w["threshold"])
        return f, f @ w["W_dec"] + w["b_dec"]
    if dict_class == "JumpReluAutoEncoder":
        pre = x @ w["W_enc"] + w["b_enc"]  # no b_dec subtraction
        f = torch.relu(pre * (pre > w["threshold"]))
        return f, f @ w["W_dec"] + w["b_dec"]
    if dict_class == "GatedAutoEncoder":
        e = (x - w["decoder_bias"]) @ w["encoder.weight"].T
        gate = (e + w["gate_bias"] > 0).float()
        f = gate * torch.relu(w["r_mag"].exp() * e + w["mag_bias"])
        return f, f @ w["decoder.weight"].T + w["decoder_bias"]
    raise AssertionError(dict_class)


def dense(acts, n_rows: int) -> torch.Tensor:
    out = torch.zeros(n_rows, D_SAE)
    out[acts.rows, acts.latents] = acts.values
    return out


CLASSES = [
    "AutoEncoder",
    "AutoEncoderNew",
    "AutoEncoderTopK",
    "AutoEncoderTopK-2024-07",
    "BatchTopKSAE",
    "MatryoshkaBatchTopKSAE",
    "JumpReluAutoEncoder",
    "GatedAutoEncoder",
]


@pytest.mark.parametrize("dict_class", CLASSES)
def test_encode_and_decode_follow_the_dict_class(tmp_path, dict_class):
    folder = write_checkpoint(tmp_path / "trainer_0", dict_class)
    assert detect_kind(folder) == "dictionary_learning"
    coder = load_coder(folder)
    assert (coder.kind, coder.d_in, coder.num_latents) == ("dictionary_learning", D_IN, D_SAE)
    assert coder.hook == "blocks.3.hook_resid_post" and coder.transcoder is False
    assert coder.content_hash == hash_files([folder / "config.json", folder / "ae.pt"])
    x = rand(40, D_IN, seed=9, scale=2.0)
    acts = coder.encode(x)
    f, recon = reference(dict_class, state_dict(dict_class), x)
    assert 0 < len(acts) < f.numel()  # sparse, not empty
    assert (acts.values > 0).all()
    torch.testing.assert_close(dense(acts, len(x)), f)
    torch.testing.assert_close(coder.decode(acts, len(x)), recon, rtol=1e-4, atol=1e-4)
    assert tuple(coder.decoder_directions().shape) == (D_SAE, D_IN)
    if "TopK" in dict_class and "Batch" not in dict_class:
        assert (torch.bincount(acts.rows, minlength=len(x)) == K).all()


def test_topk_subtracts_b_dec_and_jumprelu_does_not(tmp_path):
    """The one difference between the two formulas that a wrong guess would hide: checked against its opposite."""
    x = rand(30, D_IN, seed=11, scale=2.0)
    w = state_dict("AutoEncoderTopK")
    coder = load_coder(write_checkpoint(tmp_path / "topk", "AutoEncoderTopK"))
    a = torch.relu(x @ w["encoder.weight"].T + w["encoder.bias"])  # without the subtraction
    top = a.topk(K, dim=-1)
    assert not torch.allclose(dense(coder.encode(x), len(x)), torch.zeros_like(a).scatter_(-1, top.indices, top.values))
    w = state_dict("JumpReluAutoEncoder")
    coder = load_coder(write_checkpoint(tmp_path / "jump", "JumpReluAutoEncoder"))
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]  # with it
    assert not torch.allclose(dense(coder.encode(x), len(x)), torch.relu(pre) * (pre > w["threshold"]))


def test_batch_topk_threshold_never_set_falls_back_to_per_row_topk(tmp_path):
    folder = write_checkpoint(tmp_path / "t", "BatchTopKSAE", state=state_dict("BatchTopKSAE", threshold=-1.0))
    x = rand(20, D_IN, seed=12, scale=2.0)
    acts = load_coder(folder).encode(x)
    assert (torch.bincount(acts.rows, minlength=len(x)) == K).all()


def test_k_comes_from_config_json_when_the_state_dict_has_none(tmp_path):
    state = state_dict("AutoEncoderTopK")
    del state["k"]
    cfg = trainer_config("AutoEncoderTopK")
    cfg["trainer"]["k"] = 5
    folder = write_checkpoint(tmp_path / "t", "AutoEncoderTopK", config=cfg, state=state)
    acts = load_coder(folder, "dictionary_learning").encode(rand(10, D_IN, seed=13, scale=2.0))
    assert (torch.bincount(acts.rows, minlength=10) == 5).all()


def test_ae_pt_itself_and_the_coder_kind_choice(tmp_path):
    folder = write_checkpoint(tmp_path / "t", "AutoEncoder")
    assert load_coder(folder / "ae.pt").path == str(folder)
    assert "dictionary_learning" in CHOICES["cache.coder_kind"]


# ---- hooks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer,submodule,hook",
    [
        (3, "resid_post_layer_3", "blocks.3.hook_resid_post"),
        (12, "resid_post_layer_12", "blocks.12.hook_resid_post"),
        (2, "resid_pre_layer_2", "blocks.2.hook_resid_pre"),
        (2, "mlp_out_layer_2", "blocks.2.hook_mlp_out"),
        (1, "attn_out_layer_1", "blocks.1.hook_attn_out"),
        (4, None, "blocks.4.hook_resid_post"),  # no submodule name: the residual stream after `layer`, as SAELens
        (3, "layer_3_out", None),  # a name that does not say the site: `hook` must be set
    ],
)
def test_hook_from_config_json(layer, submodule, hook):
    assert hook_of({"layer": layer, "submodule_name": submodule}) == hook


@pytest.mark.parametrize(
    "name,hook",
    [
        ("blocks.3.hook_resid_post__trainer_0", "blocks.3.hook_resid_post"),
        ("blocks.12.hook_resid_post__trainer_0_step_308", "blocks.12.hook_resid_post"),
        ("resid_post_layer_3_trainer_1", "blocks.3.hook_resid_post"),
        ("pythia70m_sweep_topk_ctx128_0730/resid_post_layer_4/trainer_9", "blocks.4.hook_resid_post"),
        ("trainer_0", None),
    ],
)
def test_hook_from_a_saelens_id_or_a_path(name, hook):
    assert hook_from_name(name) == hook


def test_an_unnamed_site_leaves_the_hook_to_the_config(tmp_path):
    cfg = trainer_config("AutoEncoder")
    cfg["trainer"]["submodule_name"] = "layer_3_out"
    coder = load_coder(write_checkpoint(tmp_path / "t", "AutoEncoder", config=cfg))
    assert coder.hook is None


# ---- refusals: one line each ----------------------------------------------------------------------------------


def error_of(fn, *args) -> str:
    return one_line_error(fn, *args, error=CoderError)


def test_unknown_dict_class_is_one_line_naming_it(tmp_path):
    cfg = trainer_config("AutoEncoder")
    cfg["trainer"]["dict_class"] = "CrossCoder"
    message = error_of(load_coder, write_checkpoint(tmp_path / "t", "AutoEncoder", config=cfg))
    assert "'CrossCoder'" in message and "AutoEncoderTopK" in message


class _Planted:
    """Unpickling this creates a file: a full pickle load would run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_holding_more_than_tensors_is_refused_unrun(tmp_path):
    marker = tmp_path / "ran"
    state = state_dict("AutoEncoder")
    state["extra"] = _Planted(marker)
    folder = write_checkpoint(tmp_path / "t", "AutoEncoder", state=state)
    message = error_of(load_coder, folder)
    assert "refused" in message and "weights_only" in message and "open" in message
    assert not marker.exists()


def test_an_unreadable_ae_pt_is_one_line(tmp_path):
    folder = write_checkpoint(tmp_path / "t", "AutoEncoder")
    (folder / "ae.pt").write_bytes(b"")
    error_of(load_coder, folder)
    (folder / "ae.pt").write_bytes((tmp_path / "t" / "config.json").read_bytes())
    error_of(load_coder, folder)
    buf = io.BytesIO()
    torch.save([torch.zeros(3)], buf)  # a list, not a state dict
    (folder / "ae.pt").write_bytes(buf.getvalue())
    assert "state dict" in error_of(load_coder, folder)


def test_missing_keys_and_wrong_sizes_are_one_line(tmp_path):
    state = state_dict("GatedAutoEncoder")
    del state["r_mag"]
    message = error_of(load_coder, write_checkpoint(tmp_path / "a", "GatedAutoEncoder", state=state))
    assert "'r_mag'" in message
    cfg = trainer_config("AutoEncoder")
    cfg["trainer"]["dict_size"] = 999
    message = error_of(load_coder, write_checkpoint(tmp_path / "b", "AutoEncoder", config=cfg))
    assert "dict_size 999" in message
    folder = write_checkpoint(tmp_path / "c", "AutoEncoder")
    (folder / "config.json").unlink()
    assert "config.json" in error_of(load_coder, folder)


# ---- by name, through SAELens's directory and the hub cache ---------------------------------------------------------

REPO = "canrager/lm_sae"
SPEC = "saelens:sae_bench_pythia70m_sweep_topk_ctx128_0730/blocks.3.hook_resid_post__trainer_0"
PATH = "pythia70m_sweep_topk_ctx128_0730/resid_post_layer_3/trainer_0"

needs_saelens = pytest.mark.skipif(
    importlib.util.find_spec("sae_lens") is None or importlib.util.find_spec("yaml") is None,
    reason="sae-lens is not installed (pip install --no-deps 'sae-lens>=6.50')",
)


def sweep_files(weights: bool = True, path: str = PATH, layer: int = 3) -> dict[str, bytes]:
    files = checkpoint_files(
        "AutoEncoderTopK", config=trainer_config("AutoEncoderTopK", layer, f"resid_post_layer_{layer}")
    )
    if not weights:
        del files["ae.pt"]
    return {f"{path}/{name}": data for name, data in files.items()}


@needs_saelens
def test_saebench_sae_by_name_resolves_then_loads(hub_cache, requested):
    entry = hub.saelens_directory()["sae_bench_pythia70m_sweep_topk_ctx128_0730"]
    assert (entry.repo_id, entry.conversion_func, entry.saes_map["blocks.3.hook_resid_post__trainer_0"]) == (
        REPO,
        "dictionary_learning_1",
        PATH,
    )
    snap = lay_out(hub_cache, REPO, sweep_files())
    cfg = CacheConfig(coder=SPEC)
    settle_hub_coder(cfg)
    # the model from SAELens's directory entry (pythia-70m-deduped), the hook from config.json
    assert (cfg.model, cfg.hook, cfg.coder) == (LM, "blocks.3.hook_resid_post", f"{SPEC}@{REV}")
    assert requested == [f"{PATH}/config.json"]  # the identity needed no weights
    coder = load_configured_coder(cfg, None)
    assert requested[-1] == f"{PATH}/ae.pt"
    folder = snap / PATH
    assert (coder.kind, coder.d_in, coder.num_latents, coder.path) == ("dictionary_learning", D_IN, D_SAE, cfg.coder)
    assert coder.hook == "blocks.3.hook_resid_post"
    assert coder.content_hash == hash_files([folder / "config.json", folder / "ae.pt"])
    x = rand(6, D_IN, seed=14, scale=2.0)
    torch.testing.assert_close(
        dense(coder.encode(x), 6), reference("AutoEncoderTopK", state_dict("AutoEncoderTopK"), x)[0]
    )
    assert load_coder(coder.path).content_hash == coder.content_hash  # the pinned spec loads the same files again
    settle_hub_coder(cfg)  # idempotent
    assert cfg.coder == f"{SPEC}@{REV}"


@needs_saelens
def test_saebench_sae_with_another_model_or_hook_is_refused_before_the_weights(hub_cache, requested):
    lay_out(hub_cache, REPO, sweep_files(weights=False))
    message = error_of(prepare, CacheConfig(coder=SPEC, model="gpt2"))
    assert "'pythia-70m-deduped'" in message and "'gpt2'" in message and "not in the local" not in message
    assert requested == [f"{PATH}/config.json"]
    message = error_of(settle_hub_coder, CacheConfig(coder=SPEC, hook="blocks.2.hook_resid_post"))
    assert "'blocks.3.hook_resid_post'" in message
    cfg = CacheConfig(coder=SPEC, model=LM, hook="blocks.4.hook_resid_pre")  # the same residual stream
    settle_hub_coder(cfg)
    assert "ae.pt" not in " ".join(requested)
    message = error_of(load_configured_coder, cfg, None)  # now the weights are wanted, and not cached
    assert "ae.pt is not in the local Hugging Face cache" in message


@needs_saelens
def test_saebench_unknown_dict_class_is_refused_before_the_weights(hub_cache, requested):
    cfg = trainer_config("AutoEncoderTopK")
    cfg["trainer"]["dict_class"] = "FancyNewSAE"
    lay_out(hub_cache, REPO, {f"{PATH}/config.json": json.dumps(cfg).encode()})
    message = error_of(settle_hub_coder, CacheConfig(coder=SPEC))
    assert "'FancyNewSAE'" in message and requested == [f"{PATH}/config.json"]


def test_dictionary_learning_folder_by_hf(hub_cache):
    snap = lay_out(hub_cache, REPO, sweep_files())
    cfg = CacheConfig(coder=f"hf:{REPO}/{PATH}")
    settle_hub_coder(cfg)
    assert (cfg.model, cfg.hook, cfg.coder) == (LM, "blocks.3.hook_resid_post", f"hf:{REPO}/{PATH}@{REV}")
    coder = load_configured_coder(cfg, None)
    assert coder.kind == "dictionary_learning"
    assert coder.content_hash == hash_files([snap / PATH / "config.json", snap / PATH / "ae.pt"])


@needs_saelens
def test_prepare_runs_the_saebench_sae_on_pythia(hub_cache, tmp_path):
    """`coder = "saelens:sae_bench_pythia70m_sweep_topk_ctx128_0730/blocks.3.hook_resid_post__trainer_0"` alone: the
    SAE's model (a tiny stand-in for EleutherAI/pythia-70m-deduped in the hub cache) runs at the SAE's hook."""
    snap = lay_out(hub_cache, REPO, sweep_files())
    tiny_model(lay_out(hub_cache, LM, {}), "gpt_neox", 4)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{i % 98} the cat sat" for i in range(200)))
    cfg = CacheConfig(coder=SPEC, corpus=str(corpus), device="cpu", dtype="float32")
    parts = prepare(cfg)
    assert (parts.model.name, parts.hook, parts.coder.d_in) == (LM, "blocks.3.hook_resid_post", D_IN)
    prov = provenance(parts, cfg)
    folder = snap / PATH
    assert prov["coder_path"] == f"{SPEC}@{REV}" and prov["coder_kind"] == "dictionary_learning"
    assert prov["coder_hash"] == hash_files([folder / "config.json", folder / "ae.pt"])
