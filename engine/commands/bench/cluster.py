"""`autointerp bench cluster`: the same cache and the same explain + score run once in this process and once on a
Ray cluster, in one command, so the ratio is measured under the same load.

- cache_tok_s_*: tokens per second of the caching pass (forward passes and commits; statistics, annotation and
  filters run on the driver alike and are left out); `_ray` includes starting the workers (each loads the model),
  which `ray_cache_start_s` reports apart
- llm_latents_per_min_*: explain + score latents per minute of wall time; `_ray` includes starting the replicas
- identical_*: whether the cluster's rows equal the single process's (segments, explanations, scores)
"""

from __future__ import annotations

import dataclasses
import io
import tempfile
import time
from pathlib import Path

from rich.console import Console

from autointerp.engine.config import CacheConfig, ClusterConfig, Config
from autointerp.store.bench_reads import cache_rows, score_outcome_rows


def bench_cluster(
    ray_address: str = "local",
    n_tokens: int = 32_768,
    n_latents: int = 4,
    workdir: str | None = None,
    cluster_cfg: ClusterConfig | None = None,
) -> dict:
    from autointerp.engine.activations.cache import run_cache
    from autointerp.engine.activations.shards import RayEncoder
    from autointerp.engine.ray_cluster import connect

    from ..batch import BatchRunner

    work = Path(workdir or tempfile.mkdtemp(prefix="autointerp-bench-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    cache_cfg = CacheConfig(n_tokens=n_tokens, seq_len=256, chunk_tokens=8192, batch_size=8)
    cl = cluster_cfg or ClusterConfig()
    one, many = work / "one.db", work / "ray.db"
    for p in (one, many):
        p.unlink(missing_ok=True)
    out: dict = {"tokens": n_tokens, "latents": n_latents}

    single = run_cache(cache_cfg, str(one))
    out["cache_tok_s_single"] = round(single.tokens_per_s)
    cluster = connect(ray_address)
    try:
        out["cluster"] = cluster.describe()
        encoder = RayEncoder(cluster, cache_cfg, cl)
        t = time.perf_counter()
        encoder._start()  # timed apart: each worker loads the model once
        out["ray_cache_start_s"] = round(time.perf_counter() - t, 1)
        out["cache_workers"] = len(encoder.slots)
        t = time.perf_counter()
        spread = run_cache(cache_cfg, str(many), encoder=encoder)
        out["cache_tok_s_ray"] = round(spread.tokens / spread.seconds)
        out["cache_tok_s_ray_with_start"] = round(spread.tokens / (spread.seconds + out["ray_cache_start_s"]))
        out["cache_ratio_ray_to_single"] = round(out["cache_tok_s_ray"] / max(out["cache_tok_s_single"], 1), 2)
        out["identical_cache"] = cache_rows(one) == cache_rows(many)
    finally:
        cluster.close()
    if n_latents:
        base = Config(db=str(one))
        base.batch.stages = ["explain", "score"]
        base.batch.latents = f"top:{n_latents}"
        base.score.scorers = ["detection"]
        quiet = Console(file=io.StringIO(), width=200)
        for name, db, address in (("single", one, ""), ("ray", many, ray_address)):
            cfg = dataclasses.replace(base, db=str(db), cluster=dataclasses.replace(cl, ray_address=address))
            t = time.perf_counter()
            BatchRunner(cfg, console=quiet).run()  # the replicas' start (model loads) is part of the ray figure
            out[f"llm_latents_per_min_{name}"] = round(n_latents / ((time.perf_counter() - t) / 60), 2)
        out["llm_ratio_ray_to_single"] = round(
            out["llm_latents_per_min_ray"] / max(out["llm_latents_per_min_single"], 1e-9), 2
        )
        out["identical_scores"] = score_outcome_rows(one) == score_outcome_rows(many)
    return out
