"""Cached activations equal TransformerLens's on every architecture family we claim, at every hook the cache offers.

Each family is a tiny random-weight model built offline from its transformers config (engine/activations/tiny.py).
The reference is TransformerLens's own value at the hook (`run_with_cache` on the bridge); what is compared is what
the cache stores: `SubjectModel.hook_activations` on its default path.
"""

import dataclasses

import pytest
import torch

from autointerp.engine.activations import model as model_mod
from autointerp.engine.activations.model import PLAIN_TOLERANCE, SubjectModel, stale_forward
from autointerp.engine.activations.tiny import TINY_FAMILIES

HOOKS = [
    "hook_resid_pre",
    "hook_resid_post",
    "hook_attn_out",
    "hook_mlp_out",
    "mlp.hook_in",
    "mlp.hook_post",
    "attn.hook_z",
    "attn.hook_out",
    "mlp.hook_out",
]
POST_NORM = {"gemma2", "gemma3", "olmo2"}
_loaded: dict[tuple[str, str], SubjectModel] = {}


def tiny(family: str, dtype: str = "float32") -> SubjectModel:
    if (family, dtype) not in _loaded:
        _loaded[(family, dtype)] = SubjectModel.load(f"tiny:{family}", "cpu", dtype)
    return _loaded[(family, dtype)]


def tokens(model: SubjectModel) -> torch.Tensor:
    t = torch.randint(0, model.vocab_size, (2, 20), generator=torch.Generator().manual_seed(7))
    t[:, 0] = model.start_id
    return t


def reference(model: SubjectModel, toks: torch.Tensor, hook: str) -> torch.Tensor:
    """TransformerLens's value at `hook`, read here independently of SubjectModel's own bridge path."""
    _, cache = model.bridge.run_with_cache(toks, names_filter=hook, return_cache_object=False)
    value = cache[hook]
    return value.flatten(-2) if hook.endswith("attn.hook_z") else value


def assert_same(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert got.shape == ref.shape, what
    scale = float(ref.float().abs().max())
    diff = float((got.float() - ref.float()).abs().max())
    assert diff <= PLAIN_TOLERANCE[dtype] * max(scale, 1e-6), (
        f"{what}: max |diff| {diff:.3g} on values up to {scale:.3g}"
    )


@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_every_hook_equals_transformer_lens_and_takes_the_plain_path(family):
    model = tiny(family)
    toks = tokens(model)
    for h in HOOKS:
        hook = f"blocks.1.{h}"
        model.check_hook(hook)
        got = model.hook_activations(toks, hook)
        assert got.shape == (2, 20, model.hook_width(hook)), hook
        assert_same(got, reference(model, toks, hook), torch.float32, f"{family} {hook}")
        # The common families cache at plain-HF speed: every hook is served by the plain path, and says why.
        assert model.forward_kind(hook) == "plain", (hook, model.forward_reason(hook))
        assert "equal to TransformerLens" in model.forward_reason(hook)


@pytest.mark.parametrize("family", ["gemma2", "gpt2"])
def test_bfloat16_within_its_tolerance(family):
    model = tiny(family, "bfloat16")
    toks = tokens(model)
    for hook in ("blocks.2.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.1.attn.hook_z"):
        got = model.hook_activations(toks, hook)
        assert got.dtype == torch.bfloat16
        assert_same(got, reference(model, toks, hook), torch.bfloat16, f"{family} bf16 {hook}")


@pytest.mark.parametrize("family", sorted(POST_NORM))
def test_post_norm_families_differ_at_the_submodule_output_the_old_path_read(family):
    """Before the fix the plain path read the attention / MLP submodule's own output: before the post-norm that
    TransformerLens's hook includes. That site is far from the right value, so the fix is not a rounding matter."""
    model = tiny(family)
    toks = tokens(model)
    block = model.plain.model.layers[1]
    for hook, module in (("blocks.1.hook_attn_out", block.self_attn), ("blocks.1.hook_mlp_out", block.mlp)):
        got = {}
        handle = module.register_forward_hook(
            lambda m, a, out, got=got: got.__setitem__("x", out[0] if isinstance(out, tuple) else out)
        )
        try:
            with torch.no_grad():
                model.plain(toks)
        finally:
            handle.remove()
        ref = reference(model, toks, hook)
        assert float((got["x"] - ref).abs().max()) > 0.1 * float(ref.abs().max()), hook


def test_a_plain_site_that_does_not_match_is_not_used(monkeypatch):
    """A layout entry pointing at the wrong module (here: the MLP's input read as its output) is caught by the probe
    against TransformerLens: the bridge serves the hook and says why."""
    wrong = model_mod.PlainLayout(
        "model.layers", dict(model_mod.PLAIN_LAYOUTS["llama"].sites, hook_mlp_out=("mlp", "in"))
    )
    monkeypatch.setitem(model_mod.PLAIN_LAYOUTS, "llama", wrong)
    model = SubjectModel.load("tiny:llama", "cpu", "float32")
    hook = "blocks.1.hook_mlp_out"
    assert model.forward_kind(hook) == "bridge"
    assert "differs from TransformerLens" in model.forward_reason(hook)
    toks = tokens(model)
    assert_same(model.hook_activations(toks, hook), reference(model, toks, hook), torch.float32, hook)
    assert model.forward_kind("blocks.1.hook_resid_post") == "plain"  # the other sites are still served plainly


def test_hooks_without_a_plain_site_use_the_bridge_and_say_so():
    model = tiny("llama")
    assert model.forward_kind("blocks.1.hook_resid_mid") == "bridge"
    assert "no plain module" in model.forward_reason("blocks.1.hook_resid_mid")


def test_stale_forward_names_only_post_norm_attention_and_mlp_outputs_made_before_the_fix():
    old = {"forward": "plain", "forward_sites": None, "hook": "blocks.3.hook_mlp_out"}
    assert "wrong site" in stale_forward(old, "gemma2") and "--redo cache" in stale_forward(old, "gemma2")
    assert "wrong site" in stale_forward(dict(old, hook="blocks.3.hook_attn_out"), "olmo2")
    assert stale_forward(old, "llama") is None  # pre-norm: the submodule's output is TransformerLens's hook
    assert stale_forward(dict(old, hook="blocks.3.hook_resid_post"), "gemma2") is None
    assert stale_forward(dict(old, forward="bridge"), "gemma2") is None
    assert stale_forward(dict(old, forward_sites="2"), "gemma2") is None  # made after the fix
    assert "cannot tell" in stale_forward(old, None)


def test_one_start_token_convention_for_tokenizers_with_and_without_a_bos_token():
    """BOS where the tokenizer has one (Gemma, Llama; GPT-2's and Pythia's BOS is their EOS), else EOS (Qwen)."""
    import copy

    from autointerp.engine.activations.model import start_tokens

    model = tiny("llama")
    tok = model.tokenizer
    start, sep, rule = start_tokens(tok)
    assert (start, sep) == (tok.bos_token_id, tok.eos_token_id) == (model.start_id, model.sep_id)
    assert rule == f"bos: {tok.bos_token}" + (" (= EOS)" if tok.bos_token_id == tok.eos_token_id else "")
    no_bos = copy.deepcopy(tok)
    no_bos.bos_token = None
    assert no_bos.bos_token_id is None
    start, sep, rule = start_tokens(no_bos)
    assert start == sep == tok.eos_token_id and rule == f"eos (no BOS token): {tok.eos_token}"


def test_sparsify_module_paths_of_a_post_norm_family_read_the_module_itself():
    """`layers.N.mlp` is the MLP module's output, which sparsify hooks: in Gemma that is before the post-norm, so not
    TransformerLens's hook_mlp_out. The cache reads it at mlp.hook_out (attn.hook_out for self_attn)."""
    from autointerp.engine.activations.coders.base import SparseCoder
    from autointerp.engine.activations.model import hook_from_module_path
    from autointerp.engine.activations.setup import resolve_hook
    from autointerp.engine.config import CacheConfig

    coder = SparseCoder("sparsify", 8, 64, None, "", "")
    for family, post_norm in (("gemma2", True), ("llama", False)):
        cfg = CacheConfig(model=f"tiny:{family}", coder="x")
        mlp = resolve_hook(dataclasses.replace(cfg, hook="layers.1.mlp"), coder)
        attn = resolve_hook(dataclasses.replace(cfg, hook="layers.1.self_attn"), coder)
        assert (mlp, attn) == (
            ("blocks.1.mlp.hook_out", "blocks.1.attn.hook_out")
            if post_norm
            else ("blocks.1.hook_mlp_out", "blocks.1.hook_attn_out")
        )
    assert hook_from_module_path("layers.1.mlp", transcoder=True, post_norm=True) == "blocks.1.mlp.hook_in"
    model = tiny("gemma2")
    toks = tokens(model)
    block = model.plain.model.layers[1]
    got = {}
    handle = block.mlp.register_forward_hook(lambda m, a, out: got.__setitem__("x", out))
    try:
        with torch.no_grad():
            model.plain(toks)
    finally:
        handle.remove()
    torch.testing.assert_close(model.hook_activations(toks, "blocks.1.mlp.hook_out"), got["x"], rtol=0, atol=0)


@pytest.mark.parametrize("family", ["gemma2", "llama", "gpt2"])
def test_the_logit_lens_scales_by_what_the_final_norm_multiplies(family):
    """Gemma's RMS norm multiplies by (1 + weight): the lens's gain is that, not the stored weight (zeros at init,
    which gave every Gemma latent all-zero logits). Llama's multiplies by its weight; GPT-2's LayerNorm gain is its
    weight, as before."""
    from autointerp.engine.activations.lens import final_norm_gain

    model = SubjectModel.load(f"tiny:{family}", "cpu", "float32")  # its own copy: the weight is changed below
    norm = model.bridge.ln_final
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, norm.weight.numel()))
    expected = norm.weight + 1 if family == "gemma2" else norm.weight
    torch.testing.assert_close(final_norm_gain(model.bridge), expected.detach(), rtol=1e-5, atol=1e-5)
