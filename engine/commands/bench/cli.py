"""`autointerp bench ...`: benchmarks that print figures (not tests), one command per module of this package."""

from __future__ import annotations

import json
import os
import sys

import click

from autointerp.engine.config import CHOICES, resolve_config

from ..wiring import check_output_folder, user_errors


@click.group()
def bench() -> None:
    """Benchmarks that print figures (not tests)."""


def print_figures(result: dict, as_json: bool) -> None:
    """A benchmark's figures: one JSON object, or one aligned `name value` line each."""
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        for k, v in result.items():
            click.echo(f"{k:24s} {v}")


@bench.command("cache")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--n-tokens", default=32_768, help="N: tokens of the small run (the large run caches 10N).")
@click.option("--fetch-tokens", default=1_000_000, help="Tokens in the cache used for the window-fetch timing.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to put the benchmark databases.")
@click.option("--model", default="embedded", help="Model spec (a HF id[@REV], a folder, tiny:FAMILY, a .gguf).")
@click.option("--hook", default="", help="Hook point (default: the coder's, or the middle block's MLP neurons).")
@click.option("--coder", default="", help="Coder checkpoint (default: the embedded SAE, or the model's MLP neurons).")
@user_errors
def bench_cache(as_json, n_tokens, fetch_tokens, workdir, model, hook, coder) -> None:
    """Cache throughput vs a bare forward, bytes per activation, peak RSS at N and 10N, fetch latency."""
    from .cache import bench_cache as run

    check_output_folder(workdir, "--workdir")
    result = run(n_tokens=n_tokens, fetch_tokens=fetch_tokens, workdir=workdir, model=model, hook=hook, coder=coder)
    print_figures(result, as_json)


@bench.command("scale")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--latents", default=131_072, show_default=True, help="SAE width of the synthetic cache.")
@click.option("--tokens", default=10_000_000, show_default=True, help="Cached tokens.")
@click.option("--k", default=64, show_default=True, help="Active latents per token (TopK).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to put the benchmark databases.")
@user_errors
def bench_scale(as_json, latents, tokens, k, workdir) -> None:
    """Every stage after the forward pass on a synthetic wide-SAE cache, at this size and a quarter of it:
    seconds, peak RSS, bytes per activation, TUI latencies, and each stage extrapolated to 1M latents x 100M
    tokens."""
    from .scale import bench_scale as run
    from .scale import format_figures

    check_output_folder(workdir, "--workdir")
    if latents < 256 or tokens < 16_384 or not 1 <= k <= latents:
        raise click.UsageError("--latents must be at least 256, --tokens at least 16,384, and 1 <= --k <= --latents")
    result = run(latents=latents, tokens=tokens, k=k, workdir=workdir)
    click.echo(json.dumps(result, sort_keys=True) if as_json else format_figures(result))


@bench.command("cluster")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--ray", "ray_address", default="local", show_default=True, help="The Ray cluster to measure.")
@click.option("--tokens", "n_tokens", default=32_768, show_default=True, help="Tokens to cache, each way.")
@click.option("--latents", "n_latents", default=4, show_default=True, help="Latents to explain + score (0: none).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where to put the benchmark databases.")
@user_errors
def bench_cluster(as_json, ray_address, n_tokens, n_latents, workdir) -> None:
    """The same cache and explain + score in one process and on a Ray cluster: throughput of each, their ratio,
    and whether the rows are identical."""
    from .cluster import bench_cluster as run

    check_output_folder(workdir, "--workdir")
    print_figures(run(ray_address, n_tokens, n_latents, workdir), as_json)


@bench.command("llm")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (its [llm], profile...).")
@click.option("--db", help="An existing cache to read (results go to a copy); default: a fresh 16k-token cache.")
@click.option("--latents", "n_latents", default=4, help="How many of the most frequent latents.")
@click.option("--examples-per-prompt", type=int, help="Excerpts per scorer prompt (default: the profile's).")
@click.option(
    "--scorers", default="detection,fuzzing", help="Comma-separated scorers, each timed as its own stage, or 'all'."
)
@user_errors
def bench_llm(as_json, config_path, db, n_latents, examples_per_prompt, scorers) -> None:
    """Explain + score throughput, prefix-cache hit ratio, overhead, and per scorer tokens and seconds per latent."""
    from .llm import bench_llm as run

    names = list(CHOICES["score.scorers"]) if scorers == "all" else [s.strip() for s in scorers.split(",") if s.strip()]
    # --db here is a cache to read, not the config's database: it goes to the benchmark as it is.
    cfg = resolve_config(config_path, examples_per_prompt=examples_per_prompt or None, scorers=names)
    result = run(cfg, db=db, n_latents=n_latents, scorers=names)
    print_figures(result, as_json)


@bench.command("tui", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_tui(args) -> None:
    """First paint and latent-switch latency of the TUI on 100k latents: [--latents N] [--db PATH] [--json]."""
    # Its own program, like `autointerp tui`: the engine never imports Textual.
    os.execvp(sys.executable, [sys.executable, "-m", "autointerp.tui.bench", *args])
