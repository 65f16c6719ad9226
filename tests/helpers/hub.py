"""A Hugging Face hub cache laid out by a test in huggingface_hub's own format, read with HF_HUB_OFFLINE=1 (no test
reaches the hub): `models--ORG--NAME/snapshots/<commit>/<path>`, `refs/main` holding the commit."""

from __future__ import annotations

from pathlib import Path

REV = "0123456789abcdef0123456789abcdef01234567"


def lay_out(cache: Path, repo_id: str, files: dict[str, bytes], rev: str = REV) -> Path:
    """Files of a repo in huggingface_hub's cache layout; returns the snapshot folder."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes(data)
    return snap


def tiny_model(folder: Path, family: str, layers: int) -> Path:
    """A tiny random-weight model of `family` (engine/activations/tiny.py's config, 64 wide) with `layers` blocks and
    the embedded tokenizer, saved into `folder` as a hub repo holds it: a stand-in for a real model's id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autointerp.engine.activations.tiny import TINY_FAMILIES, tiny_model_folder

    tok = AutoTokenizer.from_pretrained(tiny_model_folder(f"tiny:{family}")[0])
    depth = {"n_layer" if family == "gpt2" else "num_hidden_layers": layers}
    cfg = TINY_FAMILIES[family](bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **depth)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
