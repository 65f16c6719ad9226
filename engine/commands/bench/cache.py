"""`autointerp bench cache`: figures for the activation cache, measured in one run.

- tokens_per_s_forward: a plain Hugging Face forward up to the hooked block and no further (the true limit),
  same batches; tokens_per_s_bridge_forward: TransformerLens's bridge forward to the same block
- tokens_per_s_cache: the streaming cache pipeline (forward + encode + top-k + packing + SQLite
  commits) on the N-token run, timed in the same process as the forward references; ratio_vs_hf_forward is
  its ratio to the plain HF forward, ratio_vs_bridge_forward to the bridge's. The per-latent compaction and
  statistics that follow are reported apart as finalise_s (they scale with latents, not tokens)
- writer_activations_per_s: the write path alone (packing + commit, on its own thread): what a GPU forward
  producing activations faster than this would wait on
- rss_mb_small / rss_mb_large: peak RSS of a fresh process caching N and 10N tokens
- bytes_per_activation: database bytes / stored activations (the 10N database); bytes_per_activation_by_table:
  the same file's pages per table (indexes with their table), `free` pages, and `segments.data` (the packed
  activations' own bytes: `segments` less this is row and page overhead), for every part over 0.01
- p95_window_fetch_ms: one latent's 40 strongest windows (tokens + per-token activations),
  over 200 random live latents of a 1M-token store
- tokens_per_s_hooked_forward / ratio_hooked_vs_hf_forward: the forward the cache takes to its hook (plain or
  bridge, as `forward` and `forward_reason` say), nothing encoded or written, against the plain HF forward

`--model SPEC` (with `--hook`, `--coder`) measures another model; without `--coder` it caches that model's MLP
neurons (the middle block's by default), so any model can be measured without an SAE of its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.engine.activations.cache import run_cache, sequence_stream
from autointerp.engine.activations.model import hook_layer
from autointerp.engine.activations.setup import chunk_seqs_for, prepare
from autointerp.engine.config import CacheConfig
from autointerp.store.bench_reads import database_bytes, stored_latents
from autointerp.store.compact import compact
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.queries import WindowQueries
from autointerp.store.space import space_by_table


def bench_config(n_tokens: int, model: str = "embedded", hook: str = "", coder: str = "") -> CacheConfig:
    """The cache config a benchmark run uses: the embedded default, or `model` with `coder` (default: for a model
    other than the embedded one, its MLP neurons at `hook`, else the middle block's, top 32 per token)."""
    if model == "embedded" and not coder:
        return CacheConfig(n_tokens=n_tokens, hook=hook)
    return CacheConfig(n_tokens=n_tokens, model=model, hook=hook, coder=coder or "neurons", check_reconstruction=False)


def _child(n_tokens: int, db: str, reference: bool, spec: dict | None = None) -> None:
    """Run in a fresh process: cache n_tokens, print throughput and peak RSS as JSON.

    With `reference`, a bare forward over the same batches runs before and after the cache
    (their mean is the reference time), so the ratio comes from one process and one set of batches; the hooked
    forward alone (the forward the cache takes to its hook, nothing encoded or written) is timed beside it.
    """
    cfg = bench_config(n_tokens, **(spec or {}))
    parts = prepare(cfg)
    seqs = list(sequence_stream(parts, cfg))
    layer = hook_layer(parts.hook)
    batches = [torch.from_numpy(np.stack(seqs[i : i + cfg.batch_size])) for i in range(0, len(seqs), cfg.batch_size)]
    with torch.inference_mode():
        parts.model.forward_to(batches[0], layer)  # warm-up, untimed

        def forward_pass(via_bridge: bool) -> float:
            t = time.perf_counter()
            for b in batches:
                parts.model.forward_to(b, layer, via_bridge=via_bridge)
            return time.perf_counter() - t

        def hooked_pass() -> float:
            t = time.perf_counter()
            for b in batches:
                parts.model.hook_activations(b, parts.hook)
            return time.perf_counter() - t

        fwd1 = forward_pass(False) if reference else 0.0
        bridge1 = forward_pass(True) if reference else 0.0
        hooked1 = hooked_pass() if reference else 0.0
        t = time.perf_counter()
        result = run_cache(cfg, db, parts=parts)
        total_s = time.perf_counter() - t
        hooked2 = hooked_pass() if reference else 0.0
        bridge2 = forward_pass(True) if reference else 0.0
        fwd2 = forward_pass(False) if reference else 0.0
    tokens = len(seqs) * cfg.seq_len
    fwd, bridge = (fwd1 + fwd2) / 2, (bridge1 + bridge2) / 2
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "tokens": tokens,
                "forward_s": fwd,
                "bridge_forward_s": bridge,
                "hooked_forward_s": (hooked1 + hooked2) / 2,
                "model": parts.model.name,
                "hook": parts.hook,
                "coder": parts.coder.kind,
                "forward": parts.model.forward_kind(parts.hook),
                "forward_reason": parts.model.forward_reason(parts.hook),
                "cache_s": result.seconds,
                "write_s": result.write_seconds,
                "written": result.written,
                "finalise_s": total_s - result.seconds,
                "rss_mb": rss_mb,
                "nnz": result.nnz,
            }
        )
    )


def _run_child(n_tokens: int, db: Path, reference: bool, spec: dict) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "autointerp.engine.commands.bench.cache",
            str(n_tokens),
            str(db),
            str(int(reference)),
            json.dumps(spec),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def synthetic_store(path: Path, template: ActivationStore, n_tokens: int, seed: int = 0) -> None:
    """A store with the real schema and a realistic activation shape: top-32 of the real coder's
    width per token, latent frequencies Zipf-distributed. Used only for fetch latency at 1M tokens."""
    prov = dict(template.provenance or {})
    prov["corpus"], prov["corpus_hash"], prov["n_tokens_target"] = "synthetic", "synthetic", n_tokens
    store = ActivationStore.open(path, create=True)
    store.claim(prov)
    rng = np.random.default_rng(seed)
    seq_len, m, k = prov["seq_len"], prov["num_latents"], 32
    per_chunk = chunk_seqs_for(seq_len)
    weights = 1.0 / np.arange(1, m + 1) ** 0.8
    weights /= weights.sum()
    perm = rng.permutation(m)
    n_seqs = n_tokens // seq_len
    for c, first in enumerate(range(0, n_seqs, per_chunk)):
        ns = min(per_chunk, n_seqs - first)
        seqs = rng.integers(0, prov["vocab_size"], size=(ns, seq_len))
        n_tok = ns * seq_len
        lat = perm[rng.choice(m, size=n_tok * k, p=weights)].astype(np.int32)
        off = np.repeat(np.arange(n_tok), k).astype(np.uint16)
        keep = (off % seq_len) != 0
        vals = rng.exponential(2.0, size=n_tok * k).astype(np.float16)
        store.write_chunk(
            ChunkInfo(c, first, ns, ns * (seq_len - 1), int(keep.sum())), seqs, lat[keep], off[keep], vals[keep], 0.0
        )
    compact(store)  # fetched as a finished cache is: from latent-major segments
    store.close()


def bytes_by_table(db: Path, nnz: int) -> dict[str, float]:
    """Bytes per activation of each part of the file over 0.01 (store/space.py), largest first."""
    parts = sorted(space_by_table(db).items(), key=lambda kv: -kv[1])
    return {name: round(size / nnz, 3) for name, size in parts if size / nnz >= 0.01}


def fetch_p95_ms(db: Path, n_latents: int = 200, per_latent: int = 40, seed: int = 0) -> float:
    store = ActivationStore.open(db, readonly=True)
    q = WindowQueries(store, 32)
    live = stored_latents(store.db.conn)
    rng = np.random.default_rng(seed)
    times = []
    for latent in rng.choice(live, size=min(n_latents, len(live)), replace=False):
        t = time.perf_counter()
        aw = q.activating(int(latent))
        q.fetch(aw, q.top(aw, per_latent))
        times.append((time.perf_counter() - t) * 1000)
    store.close()
    return float(np.percentile(times, 95))


def bench_cache(
    n_tokens: int = 32_768,
    fetch_tokens: int = 1_000_000,
    workdir: str | None = None,
    model: str = "embedded",
    hook: str = "",
    coder: str = "",
) -> dict:
    spec = {"model": model, "hook": hook, "coder": coder}
    prepare(bench_config(n_tokens, **spec), precheck=lambda identity: None)  # bad input: one line, before any run
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(workdir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        small = _run_child(n_tokens, root / "small.db", reference=True, spec=spec)
        large = _run_child(10 * n_tokens, root / "large.db", reference=False, spec=spec)
        large_bytes = database_bytes(root / "large.db")
        with ActivationStore.open(root / "large.db", readonly=True) as template:
            synthetic_store(root / "fetch.db", template, fetch_tokens)
        tps_cache = small["tokens"] / small["cache_s"]
        tps_fwd = small["tokens"] / small["forward_s"]
        tps_bridge = small["tokens"] / small["bridge_forward_s"]
        write_s = small["write_s"] + large["write_s"]
        tps_hooked = small["tokens"] / small["hooked_forward_s"]
        return {
            "model": small["model"],
            "hook": small["hook"],
            "coder": small["coder"],
            "forward": small["forward"],
            "forward_reason": small["forward_reason"],
            "tokens_per_s_hooked_forward": round(tps_hooked, 1),
            "ratio_hooked_vs_hf_forward": round(tps_hooked / tps_fwd, 3),
            "tokens_small": small["tokens"],
            "tokens_large": large["tokens"],
            "tokens_per_s_cache": round(tps_cache, 1),
            "tokens_per_s_forward": round(tps_fwd, 1),
            "tokens_per_s_bridge_forward": round(tps_bridge, 1),
            "tokens_per_s_cache_large": round(large["tokens"] / large["cache_s"], 1),
            "finalise_s_large": round(large["finalise_s"], 1),
            "ratio_vs_hf_forward": round(tps_cache / tps_fwd, 3),
            "ratio_vs_bridge_forward": round(tps_cache / tps_bridge, 3),
            "writer_activations_per_s": round((small["written"] + large["written"]) / max(write_s, 1e-9)),
            "bytes_per_activation": round(large_bytes / large["nnz"], 3),
            "bytes_per_activation_by_table": bytes_by_table(root / "large.db", large["nnz"]),
            "rss_mb_small": round(small["rss_mb"], 1),
            "rss_mb_large": round(large["rss_mb"], 1),
            "rss_growth_mb": round(large["rss_mb"] - small["rss_mb"], 1),
            "p95_window_fetch_ms": round(fetch_p95_ms(root / "fetch.db"), 2),
            "p95_window_fetch_ms_real_cache": round(fetch_p95_ms(root / "large.db"), 2),
            "fetch_store_tokens": fetch_tokens,
            "torch_threads": torch.get_num_threads(),
        }
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", json.loads(sys.argv[4]) if len(sys.argv) > 4 else None)
    os._exit(0)
