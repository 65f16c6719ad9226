"""`autointerp bench scale`: every stage after the forward pass, on a synthetic cache of a wide SAE.

The cache has the shape real ones have at scale (TopK: k latents per token; latent frequencies spread log-uniformly
from 1e-6 to 1e-1, plus a few dense latents; float16 values), and it is written through the real write path
(`ActivationStore.write_chunk`), so what is timed is the store and the stages, not a model. Each stage reports its
seconds and peak RSS (sampled, this process's or the child's); the file's bytes per activation come at the end.

It runs three sizes: small (a quarter of the asked latents and tokens), wide (the asked latents, a quarter of the
tokens) and the asked one. Each stage gets a growth exponent per axis, p_latents from small -> wide and p_tokens
from wide -> asked, and is extrapolated to 1,048,576 latents x 100M tokens as
t_asked * (1M / latents)**p_latents * (100M / tokens)**p_tokens. A stage that grows faster than its data shows
p > 1 on that axis; one that does not depend on an axis shows p ~ 0 there.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

from autointerp.store.bench_reads import database_bytes
from autointerp.store.db import ActivationStore, ChunkInfo
from autointerp.store.directions import write_vocab
from autointerp.store.latent_reads import latents_with_windows

if TYPE_CHECKING:
    import torch

TARGET_LATENTS, TARGET_TOKENS = 1_048_576, 100_000_000


@dataclass
class Shape:
    latents: int
    tokens: int
    k: int = 64
    seq_len: int = 256  # CacheConfig's defaults: the windows and chunks real caches have
    chunk_tokens: int = 65_536
    window_len: int = 32
    d_model: int = 576  # SmolLM2-135M's width
    vocab: int = 49_152
    n_dense: int = 4  # latents that fire on a large share of tokens, as real SAEs have
    explained: float = 0.01  # share of live latents given an explanation and scores (report, export, TUI sort)
    sample_latents: int = 1_000
    seed: int = 0


class PeakRSS:
    """The highest resident set size of a process while a block runs, sampled every 20 ms."""

    def __init__(self, pid: int | None = None):
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Stages:
    """Seconds and peak RSS (MB) of each named stage."""

    def __init__(self):
        self.figures: dict[str, dict] = {}

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        with PeakRSS() as rss:
            yield self.figures.setdefault(name, {})
        self.figures[name].update(s=round(time.perf_counter() - t, 3), peak_rss_mb=round(rss.peak / 2**20, 1))


def frequencies(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Per-latent firing probabilities per token: log-uniform in [1e-6, 1e-1], a few dense latents near 0.3,
    scaled so that a token has k activations on average."""
    f = 10.0 ** rng.uniform(-6, -1, size=shape.latents)
    f[rng.choice(shape.latents, size=min(shape.n_dense, shape.latents), replace=False)] = 0.3
    return np.minimum(f * shape.k / f.sum(), 1.0)


def synthetic_chunk(shape: Shape, cdf: np.ndarray, scale: np.ndarray, n_seqs: int, rng: np.random.Generator):
    """One chunk's sequences and (latents, offsets, values): k draws per token from the frequency distribution,
    duplicates on a token merged, BOS positions left out (as the cache leaves them)."""
    n_tok = n_seqs * shape.seq_len
    # k draws per token, sorted within each token's row (small sorts: far cheaper than one global unique), the
    # repeats of a latent on a token dropped: rows come out ordered by (token, latent).
    draws = np.searchsorted(cdf, rng.random(n_tok * shape.k)).astype(np.int32)
    draws = np.sort(draws.reshape(n_tok, shape.k), axis=1)
    fresh = np.ones_like(draws, dtype=bool)
    fresh[:, 1:] = draws[:, 1:] != draws[:, :-1]
    fresh[:: shape.seq_len] = False  # BOS positions are never activations
    offsets = np.broadcast_to(np.arange(n_tok, dtype=np.int64)[:, None], draws.shape)[fresh]
    latents = draws[fresh].astype(np.int64)
    values = (rng.lognormal(0.0, 0.6, size=len(latents)) * scale[latents]).astype(np.float16)
    seqs = rng.integers(1, shape.vocab, size=(n_seqs, shape.seq_len))
    seqs[:, 0] = 0
    return seqs, latents.astype(np.int32), offsets.astype(np.uint16), values


def provenance(shape: Shape) -> dict:
    """The synthetic cache's provenance (store/synthetic.py's, the one every synthetic file has), at this shape."""
    from autointerp.engine.config import CacheConfig
    from autointerp.store.synthetic import synthetic_provenance

    cfg = CacheConfig(
        n_tokens=shape.tokens, seq_len=shape.seq_len, chunk_tokens=shape.chunk_tokens, window_len=shape.window_len
    )
    return synthetic_provenance(
        num_latents=shape.latents,
        seq_len=shape.seq_len,
        chunk_seqs=shape.chunk_tokens // shape.seq_len,
        n_tokens_target=shape.tokens,
        vocab_size=shape.vocab,
        d_in=shape.d_model,
        seed=shape.seed,
        config=dataclasses.asdict(cfg),
        coder_kind="topk",
    )


def synthetic_vocab(shape: Shape) -> list[str]:
    return [f" t{i}" for i in range(shape.vocab)]


def write_cache(store: ActivationStore, shape: Shape, stages: Stages) -> int:
    """The synthetic chunks through `write_chunk`; only the writes are timed (generation is not the store's)."""
    rng = np.random.default_rng(shape.seed)
    f = frequencies(shape, rng)
    cdf = np.cumsum(f / f.sum())
    cdf[-1] = 1.0
    scale = rng.uniform(2.0, 40.0, size=shape.latents)
    per_chunk = shape.chunk_tokens // shape.seq_len
    n_seqs = max(shape.tokens // shape.seq_len, 1)
    nnz, write_s = 0, 0.0
    with stages.stage("write") as fig:
        for c, first in enumerate(range(0, n_seqs, per_chunk)):
            ns = min(per_chunk, n_seqs - first)
            seqs, lat, off, val = synthetic_chunk(shape, cdf, scale, ns, rng)
            t = time.perf_counter()
            store.write_chunk(ChunkInfo(c, first, ns, ns * (shape.seq_len - 1), len(val)), seqs, lat, off, val, 0.0)
            write_s += time.perf_counter() - t
            nnz += len(val)
        fig.update(write_s=round(write_s, 3), activations=nnz)
    # The stage's time is the store's: what generating the synthetic chunks took is reported beside it.
    fig.update(generate_s=round(fig["s"] - write_s, 3), s=round(write_s, 3))
    return nnz


def finalise(store: ActivationStore, shape: Shape, stages: Stages) -> None:
    import torch

    from autointerp.engine.activations.annotate import annotate_directions
    from autointerp.engine.activations.lens import LogitLens
    from autointerp.engine.activations.neighbours import DecoderNeighbours
    from autointerp.store.filters import FilterSettings, compute_filters
    from autointerp.store.onepass import compact_in_one_pass
    from autointerp.store.stats import compute_latent_stats

    # One pass, as the cache stage runs it: compaction computes the statistics, the filters' store part and the
    # co-activation sketches on the way; the two passes after it find them done (kept: they time what is left).
    with stages.stage("compaction") as fig:
        fig["activations"] = compact_in_one_pass(store, shape.window_len, FilterSettings()).moved
    with stages.stage("statistics"):
        compute_latent_stats(store, shape.window_len)
    with stages.stage("filters"):  # the cache stage's part: positional MI and unigram candidates (no model)
        compute_filters(store, FilterSettings())
    gen = torch.Generator().manual_seed(shape.seed)
    decoder = clustered_decoder(shape.latents, shape.d_model, gen)
    unembed = torch.randn(shape.d_model, shape.vocab, generator=gen)
    parts = {"logit_lens": 0.0, "neighbours": 0.0}

    def timed(name: str, fn):  # the two parts grow differently (latents vs latents squared): timed apart
        def call(*args):
            t = time.perf_counter()
            out = fn(*args)
            parts[name] += time.perf_counter() - t
            return out

        return call

    # The neighbours as they run at 1M latents (the HNSW index) at both sizes, whatever ANN_ABOVE says: the growth
    # fitted between them is the index's own, not a mix of the exact path at one size and the index at the other.
    lens, near = LogitLens(unembed, decoder, None, None), DecoderNeighbours(decoder, 10, approximate_above=0)
    lens.extremes, near.nearest = timed("logit_lens", lens.extremes), timed("neighbours", near.nearest)  # type: ignore[method-assign]
    with stages.stage("annotate") as fig:  # logit lens and decoder neighbours of every latent, from the directions
        write_vocab(store.db, synthetic_vocab(shape))
        annotate_directions(store, lens, near)
    fig["parts"] = {name: round(s, 3) for name, s in parts.items()}
    fig["neighbours"] = near.describe()
    fig["neighbours_recall"] = neighbours_recall(near, decoder, shape.seed)


def clustered_decoder(latents: int, d: int, gen: torch.Generator, family: int = 16, spread: float = 0.8):
    """Decoder rows with the structure real SAEs have: families of related directions (feature splitting). Each
    row is a family's unit direction plus noise of norm ~`spread` (cosine ~0.6 within a family, ~0 across),
    families of `family` latents on average, row norms spread over 0.5..2. Random Gaussian rows have no
    neighbours worth the name (every cosine ~N(0, 1/d)), which no real decoder looks like."""
    import torch

    centres = torch.nn.functional.normalize(torch.randn(max(latents // family, 1), d, generator=gen), dim=1)
    which = torch.randint(len(centres), (latents,), generator=gen)
    rows = centres[which] + spread * torch.randn(latents, d, generator=gen) / math.sqrt(d)
    return rows * (0.5 + 1.5 * torch.rand(latents, 1, generator=gen))


def neighbours_recall(near, decoder, seed: int, sample: int = 256) -> float:
    """Recall@k of the stage's neighbours against the exact ones (all pairs) for a sample of latents: the share
    of each latent's true k nearest that the stage returned, averaged."""
    import torch

    from autointerp.engine.activations.neighbours import DecoderNeighbours

    n = decoder.shape[0]
    ids = torch.from_numpy(np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False))
    _, got = type(near).nearest(near, ids)  # the method itself: the timed wrapper counts the stage, not this
    _, want = DecoderNeighbours(decoder, near.k).nearest(ids)
    hits = sum(len(set(g) & set(w)) for g, w in zip(got.tolist(), want.tolist()))
    return round(hits / max(want.numel(), 1), 4)


def live_latents(store: ActivationStore, n: int, min_windows: int, seed: int) -> list[int]:
    live = latents_with_windows(store.db.conn, min_windows)
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in rng.choice(live, size=min(n, len(live)), replace=False)) if live else []


def sampling_and_controls(store: ActivationStore, shape: Shape, stages: Stages, db: Path) -> None:
    """Example sets (random negatives) for `sample_latents` live latents, the co-activation index with its top
    latents for 100 of them, and a control for each."""
    from autointerp.engine.activations.neighbours import CoactivationIndex
    from autointerp.engine.config import Config, resolve_profile
    from autointerp.engine.interpretation.interpret import Interpreter
    from autointerp.engine.interpretation.sampling import ExampleSampler
    from autointerp.store.queries import WindowQueries

    cfg = resolve_profile(Config(db=str(db)), cpu_embedded=True)
    queries = WindowQueries(store, shape.window_len)
    latents = live_latents(store, shape.sample_latents, cfg.sample.min_windows, shape.seed)
    with stages.stage("sampling") as fig:
        sampler = ExampleSampler(queries, cfg.sample)
        for latent in latents:
            sampler.draw(latent)
        fig["latents"] = len(latents)
    with stages.stage("coactivation") as fig:  # the index (its stored sketches), then its top latents
        index = CoactivationIndex(queries, shape.latents)
        for latent in latents[:100]:
            index.similar(latent)
        fig["latents"] = min(len(latents), 100)
    with stages.stage("controls") as fig:  # the score stage's own draw (no backend: no LLM call is made)
        interp = Interpreter(cfg, store, None)
        try:
            for latent in latents:
                interp.control_for(latent)
        finally:
            interp.close()
        fig["latents"] = len(latents)


def write_results(store: ActivationStore, shape: Shape) -> int:
    """Explanations and scores with controls (store/synthetic.py's rows) for a share of the live latents; not
    timed: they are what the report, the exports and the TUI's sort read."""
    from autointerp.store.synthetic import insert_results, pack_results

    rng = np.random.default_rng(shape.seed + 1)
    latents = live_latents(store, max(int(shape.explained * shape.latents), 2), 1, shape.seed + 1)
    with store.db.conn:
        insert_results(store.db, rng, latents, synthetic_vocab(shape))
    pack_results(store.db.conn)  # as the score stage's end does: each scorer's sort column packed
    return len(latents)


def later_stages(db: Path, shape: Shape, stages: Stages, workdir: Path) -> None:
    from autointerp.engine.commands.estimate import plan
    from autointerp.engine.commands.export.formats import export
    from autointerp.engine.commands.report.summary import batch_report
    from autointerp.engine.config import BatchConfig, Config

    cfg = Config(db=str(db), batch=BatchConfig(latents="live", stages=["explain", "score"]))
    with stages.stage("plan_all_latents") as fig:  # `batch --dry-run` over every live latent
        fig["latents"] = plan(cfg)["latents"]
    with ActivationStore.open(db, readonly=True) as store, stages.stage("report"):
        batch_report(store, "default")
    for fmt in ("json", "delphi"):
        with stages.stage(f"export_{fmt}"):
            export(cfg, fmt, workdir / f"export_{fmt}")
    with stages.stage("tui") as fig:  # its own process, as users run it; its figures come back as JSON
        proc = subprocess.Popen(
            [sys.executable, "-m", "autointerp.tui.bench", "--db", str(db), "--json", "--switches", "50"],
            stdout=subprocess.PIPE,
            text=True,
        )
        with PeakRSS(proc.pid) as rss:
            out, _ = proc.communicate()
        tui = json.loads(out)
        fig.update(
            first_paint_ms=round(tui["first_paint_ms"], 1),
            p95_switch_ms=round(tui["p95_detail_ms"], 1),
            sort_ms=round(tui.get("sort_by_scorer_ms", float("nan")), 1),
            search_ms=round(tui["search_ms"], 1),
        )
    stages.figures["tui"]["peak_rss_mb"] = round(rss.peak / 2**20, 1)  # the TUI process's, not this one's


def run_size(shape: Shape, workdir: Path) -> dict:
    db = workdir / f"scale-{shape.latents}x{shape.tokens}.db"
    stages = Stages()
    store = ActivationStore.open(db, create=True)
    try:
        store.claim(provenance(shape))
        nnz = write_cache(store, shape, stages)
        finalise(store, shape, stages)
        write_results(store, shape)
        sampling_and_controls(store, shape, stages, db)
    finally:
        store.close()
    later_stages(db, shape, stages, workdir)
    return {"latents": shape.latents, "tokens": shape.tokens, "activations": nnz, "bytes": database_bytes(db)} | {
        "stages": stages.figures
    }


def bench_scale(
    latents: int = 131_072, tokens: int = 10_000_000, k: int = 64, workdir: str | None = None, seed: int = 0
) -> dict:
    tmp = tempfile.TemporaryDirectory() if workdir is None else None
    root = Path(workdir or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    quarter_l, quarter_t = max(latents // 4, 64), max(tokens // 4, 4096)
    try:  # the two smaller sizes first: the asked one, the longest, last
        small = run_size(Shape(quarter_l, quarter_t, k, seed=seed), root)
        wide = run_size(Shape(latents, quarter_t, k, seed=seed), root)
        big = run_size(Shape(latents, tokens, k, seed=seed), root)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return summarise(small, wide, big)


def exponents(small: dict, wide: dict, big: dict) -> tuple[float, float]:
    """(p_latents, p_tokens) of one stage from its seconds at the three sizes: latents from small -> wide (the
    tokens the same), tokens from wide -> big (the latents the same)."""

    def p(t_to: float, t_from: float, ratio: float) -> float:
        return math.log(max(t_to, 1e-3) / max(t_from, 1e-3)) / math.log(ratio) if ratio > 1 else 0.0

    return (
        p(wide["t"], small["t"], wide["latents"] / small["latents"]),
        p(big["t"], wide["t"], big["tokens"] / wide["tokens"]),
    )


def summarise(small: dict, wide: dict, big: dict) -> dict:
    """Each stage's growth exponents, one per axis, and its time extrapolated to 1M latents x 100M tokens:
    t_big * (1M / latents) ** p_latents * (100M / tokens) ** p_tokens. A stage with timed parts (annotate) is
    extrapolated part by part (and its rest apart): a part that grows faster is not averaged away. The exponents
    are reported as fitted; the extrapolation reads one below 0 as 0 (no stage gets faster with more data: a
    negative exponent is the machine's load changing between sizes, and x100 in tokens would amplify it)."""
    sizes = {"small": small, "wide": wide, "asked": big}
    f_latents, f_tokens = TARGET_LATENTS / big["latents"], TARGET_TOKENS / big["tokens"]

    def grown(times: tuple[float, float, float]) -> dict:
        at = [{"t": t, "latents": r["latents"], "tokens": r["tokens"]} for t, r in zip(times, sizes.values())]
        p_l, p_t = exponents(*at)
        p_l, p_t = round(p_l, 3), round(p_t, 3)
        target = times[2] * f_latents ** max(p_l, 0.0) * f_tokens ** max(p_t, 0.0)
        return {"p_latents": p_l, "p_tokens": p_t, "extrapolated_s_1m_100m": round(target, 1)}

    stages, extrapolated = {}, 0.0
    for name, fig in big["stages"].items():
        s_small, s_wide = small["stages"][name]["s"], wide["stages"][name]["s"]
        out = fig | {"s_small": s_small, "s_wide": s_wide} | grown((s_small, s_wide, fig["s"]))
        if "parts" in fig:
            parts_at = [r["stages"][name]["parts"] for r in sizes.values()]
            rest = grown(tuple(r["stages"][name]["s"] - sum(p.values()) for r, p in zip(sizes.values(), parts_at)))
            out["parts_growth"] = {part: grown(tuple(p[part] for p in parts_at)) for part in fig["parts"]}
            out["parts_growth"]["rest"] = rest
            for part, g in out["parts_growth"].items():  # each part's own seconds at the three sizes
                at = [p.get(part, r["stages"][name]["s"] - sum(p.values())) for r, p in zip(sizes.values(), parts_at)]
                g.update(s_small=round(at[0], 3), s_wide=round(at[1], 3), s=round(at[2], 3))
            out["extrapolated_s_1m_100m"] = round(
                sum(g["extrapolated_s_1m_100m"] for g in out["parts_growth"].values()), 1
            )
        stages[name] = out
        if name not in ("write", "tui"):
            extrapolated += out["extrapolated_s_1m_100m"]
    neighbours = stages["annotate"]["parts_growth"]["neighbours"]
    write = big["stages"]["write"]
    post = sum(f["s"] for n, f in big["stages"].items() if n not in ("write", "tui"))
    tui = big["stages"]["tui"]
    return {
        "latents": big["latents"],
        "tokens": big["tokens"],
        "activations": big["activations"],
        "bytes_per_activation": round(big["bytes"] / big["activations"], 3),
        "write_s": write["write_s"],
        "write_activations_per_s": round(big["activations"] / max(write["write_s"], 1e-9)),
        "post_forward_s": round(post, 1),
        "peak_rss_mb": max(f["peak_rss_mb"] for f in big["stages"].values()),
        "tui_first_paint_ms": tui["first_paint_ms"],
        "tui_p95_switch_ms": tui["p95_switch_ms"],
        "tui_sort_ms": tui["sort_ms"],
        "tui_search_ms": tui["search_ms"],
        "extrapolated_hours_1m_100m": round(extrapolated / 3600, 2),
        # The decoder neighbours alone: recall@k against exact neighbours on a sample (target >= 0.95), and their
        # time's growth exponent in latents, between the small and the wide size (target <= 1.2; all pairs: 2).
        "neighbours_recall_at_k": big["stages"]["annotate"]["neighbours_recall"],
        "neighbours_growth_exponent": neighbours["p_latents"],
        "sizes": {name: {"latents": r["latents"], "tokens": r["tokens"]} for name, r in sizes.items()},
        "stages": stages,
    }


def format_figures(result: dict) -> str:
    """The figures as text: one `name value` line each, then a table of the stages (a stage's timed parts
    indented under it)."""
    lines = [f"{k:28s} {v}" for k, v in result.items() if k not in ("stages", "sizes")]
    lines += [
        f"{'size ' + name:28s} {r['latents']:,} latents x {r['tokens']:,} tokens" for name, r in result["sizes"].items()
    ]
    lines.append("")
    head = (
        f"{'stage':18s} {'seconds':>9s} {'peak RSS MB':>12s} {'p_latents':>10s} {'p_tokens':>9s} {'at 1M x 100M':>14s}"
    )
    lines.append(head)

    def row(name: str, s: float | None, rss: float | None, g: dict) -> str:
        seconds = f"{s:9.2f}" if s is not None else " " * 9
        mb = f"{rss:12.1f}" if rss is not None else " " * 12
        return (
            f"{name:18s} {seconds} {mb} {g['p_latents']:10.2f} {g['p_tokens']:9.2f}"
            f" {g['extrapolated_s_1m_100m'] / 3600:12.2f} h"
        )

    for name, fig in result["stages"].items():
        lines.append(row(name, fig["s"], fig["peak_rss_mb"], fig))
        for part, g in fig.get("parts_growth", {}).items():
            lines.append(row(f"  {part}", g["s"], None, g))
    return "\n".join(lines)
