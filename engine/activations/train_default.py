"""Regenerate the embedded TopK SAE: `autointerp train-default-sae`.

EleutherAI's sparsify trains it on CPU from fixed seeds and a fixed token order. To cut the
cost, the trainer sees a copy of SmolLM2 cut after the hooked block and without its unembedding
(the SAE only needs activations up to there; the FVU loss never reads the logits).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.engine.defaults import EMBEDDED_HOOKPOINT, EMBEDDED_SAE_DIR, smollm2_gguf

from .corpus import embedded_documents, pack_sequences
from .model import gguf_as_safetensors

NUM_LATENTS = 3072  # fp16 encoder + decoder of 3072 x 576 fit the 8 MB package budget
K = 32
SEQ_LEN = 256
BATCH = 8
TRAIN_SEED = 1234  # document order of the training tokens (the default cache uses seed 0)
HELDOUT_TOKENS = int(os.environ.get("AUTOINTERP_HELDOUT_TOKENS", 98_304))


def _sequences(tokenizer, n_tokens: int, start_id: int, sep_id: int) -> np.ndarray:
    docs = embedded_documents(TRAIN_SEED)
    seqs = pack_sequences(iter(docs), tokenizer, SEQ_LEN, start_id, sep_id)
    return np.stack(list(itertools.islice(seqs, n_tokens // SEQ_LEN)))


def train(out: str | None, tokens: int) -> dict:
    os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
    from datasets import Dataset
    from sparsify import SparseCoderConfig, TrainConfig, Trainer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    layer = int(EMBEDDED_HOOKPOINT.split(".")[1])
    folder, _ = gguf_as_safetensors(smollm2_gguf())
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.model.layers = model.model.layers[: layer + 1]
    model.config.num_hidden_layers = layer + 1
    model.lm_head = torch.nn.Identity()
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    all_seqs = _sequences(tok, tokens + HELDOUT_TOKENS, start, tok.eos_token_id)
    n_train = tokens // SEQ_LEN
    train_seqs, held = all_seqs[:n_train], all_seqs[n_train:]
    ds = Dataset.from_dict({"input_ids": train_seqs}).with_format("torch")

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(
            SparseCoderConfig(num_latents=NUM_LATENTS, k=K),
            batch_size=BATCH,
            hookpoints=[EMBEDDED_HOOKPOINT],
            init_seeds=[0],
            log_to_wandb=False,
            save_dir=tmp,
            run_name="default",
            exclude_tokens=[start],
        )
        Trainer(cfg, ds, model).fit()
        src = Path(tmp) / "default" / EMBEDDED_HOOKPOINT
        from safetensors.torch import load_file, save_file

        weights = load_file(str(src / "sae.safetensors"))
        sae_cfg = json.loads((src / "cfg.json").read_text())
    train_s = time.perf_counter() - t0

    dest = Path(out) if out else EMBEDDED_SAE_DIR
    target = dest / EMBEDDED_HOOKPOINT
    target.mkdir(parents=True, exist_ok=True)
    half = {k: v.to(torch.float16).contiguous() for k, v in weights.items()}
    save_file(half, str(target / "sae.safetensors"))
    sae_cfg["d_in"] = int(weights["W_dec"].shape[1])
    (target / "cfg.json").write_text(json.dumps(sae_cfg, indent=1, sort_keys=True) + "\n")

    report = evaluate(model, target, held, start)
    report.update(
        train_tokens=int(n_train * SEQ_LEN),
        train_seconds=round(train_s, 1),
        num_latents=NUM_LATENTS,
        k=K,
        hookpoint=EMBEDDED_HOOKPOINT,
    )
    (dest / "REPORT.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report


@torch.inference_mode()
def evaluate(model, sae_dir: Path, held: np.ndarray, start_id: int) -> dict:
    """Held-out fraction of variance unexplained and dead-latent fraction of the saved (fp16) SAE."""
    from autointerp.engine.activations.coders.sparsify import SparsifyCoder

    coder = SparsifyCoder(sae_dir)
    layer = int(EMBEDDED_HOOKPOINT.split(".")[1])
    sq_err = 0.0
    xs_sum, xs_sq, n = torch.zeros(()), 0.0, 0
    fired = torch.zeros(coder.num_latents, dtype=torch.bool)
    captured = {}

    def grab(module, inputs, output):
        captured["x"] = output[0] if isinstance(output, tuple) else output

    handle = model.model.layers[layer].register_forward_hook(grab)
    for i in range(0, len(held), BATCH):
        model(torch.from_numpy(held[i : i + BATCH]))
        hs = captured["x"]
        x = hs[:, 1:, :].reshape(-1, hs.shape[-1])
        sp = coder.encode(x)
        recon = torch.zeros_like(x).index_add_(0, sp.rows, sp.values[:, None] * coder.W_dec[sp.latents]) + coder.b_dec
        sq_err += float(((x - recon) ** 2).sum())
        xs_sum = xs_sum + x.sum(0)
        xs_sq += float((x**2).sum())
        n += x.shape[0]
        fired[sp.latents.unique()] = True
    handle.remove()
    total_var = xs_sq - float((xs_sum**2).sum()) / n
    fvu = sq_err / total_var
    return {
        "heldout_tokens": int(n),
        "fvu": round(fvu, 4),
        "fraction_variance_explained": round(1 - fvu, 4),
        "dead_fraction": round(1 - float(fired.float().mean()), 4),
    }
