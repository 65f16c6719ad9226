"""The `autointerp` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from autointerp.engine.config import CHOICES, ConfigError, resolve_config
from autointerp.store.db import preflight, why_not_creatable
from autointerp.store.errors import UserError, say
from autointerp.store.stages import BATCH_STAGES, CACHE, EXPLAIN, SCORE
from autointerp.store.text import printable

from .bench.cli import bench
from .export.formats import EXPORT_FORMATS
from .probe import probe
from .retest import retest
from .wiring import check_output_folder, status, stdout_console, user_errors


class OneLineErrors(click.Group):
    """Click reports a usage error (an unknown option, a bad choice, a missing argument) in four lines of usage and
    `Error:`; here every bad input ends in the same single `error:` line, exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
            say("error", f"{e.format_message()}{where}")
            sys.exit(2)
        except click.Abort:
            say("stopped", "interrupted")
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=OneLineErrors)
@click.version_option(package_name="autointerp")
def main() -> None:
    """Cache which text makes each latent fire, explain latents with an LLM, score the explanations."""


def source_options(fn):
    """The model, hook, coder and corpus a cache reads, and how (`cache` and `check` take them alike)."""
    opts = [
        click.option("--model", help="HF id, model folder, .gguf file or 'embedded'."),
        click.option("--hook", help="Hook point, e.g. blocks.15.hook_resid_post or layers.15."),
        click.option(
            "--coder",
            help="Coder checkpoint folder / npz, 'embedded', 'neurons', or by hub: saelens:RELEASE/SAE_ID, hf:ORG/REPO[/PATH].",
        ),
        click.option("--corpus", help="'embedded', a .txt/.jsonl/.parquet file, a dataset folder or hf:NAME."),
        click.option("--seq-len", type=int, help="Tokens per sequence."),
        click.option("--batch-size", type=int, help="Sequences per forward pass."),
        click.option("--device", help="auto, cpu, cuda, cuda:N."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def cache_options(fn):
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option("--db", help="Database file (default autointerp.db)."),
        click.option("--n-tokens", type=int, help="Tokens to cache."),
    ]
    fn = source_options(fn)
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


NO_CHECK_HELP = (
    "Skip the reconstruction check of the first batch (cache.check_reconstruction = false): cache even when the "
    "coder's reconstruction at the hook is unusable."
)


@main.command()
@cache_options
@click.option("--no-check", is_flag=True, help=NO_CHECK_HELP)
@user_errors
def cache(config_path, db, no_check, **overrides) -> None:
    """Cache latent activations into the database (resumes where a killed run stopped)."""
    from rich.console import Console

    from .batch import run_one_stage

    cfg = resolve_config(config_path, db=db, check_reconstruction=False if no_check else None, **overrides)
    # Its progress on stdout, where this command always showed it: stderr stays for warnings and a stop's line.
    run = run_one_stage(cfg, CACHE, console=Console(), argv=sys.argv)
    result, parts = run.cache_result, run.cache_parts
    if result is not None and parts is not None:  # None: the cache was already complete (the run said so)
        click.echo(
            f"cached {result.tokens:,} new tokens ({result.chunks_done_before} of {result.chunks_total} chunks were "
            f"already committed) in {result.seconds:.1f}s, {result.tokens_per_s:,.0f} tok/s; "
            f"{result.nnz:,} activations in {cfg.db}; hook {parts.hook}, {parts.coder.num_latents} latents "
            f"({parts.coder.kind}), device {parts.model.device}"
        )
        if result.corpus_exhausted:
            click.echo("warning: the corpus ran out before --n-tokens; everything it holds is cached", err=True)
    click.echo(f"next: autointerp info {cfg.db}")


def config_arguments(fn):
    """A config given as CONFIG_PATH or as --config (the command refuses both at once)."""
    fn = click.option(
        "--config",
        "config_option",
        type=click.Path(dir_okay=False),
        help="TOML config file (the same as giving it as CONFIG_PATH).",
    )(fn)
    return click.argument("config_path", required=False, type=click.Path(dir_okay=False))(fn)


def one_config(config_path: str | None, config_option: str | None) -> str | None:
    """The config of `config_arguments`: CONFIG_PATH or --config, not both."""
    if config_path and config_option:
        raise ConfigError(f"two configs given ({config_path} and --config {config_option}): give one")
    return config_path or config_option


def llm_options(fn):
    opts = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file."),
        click.option("--db", help="Database file (default autointerp.db)."),
        click.option(
            "--latents",
            help="Which latents: 0-9,42 | random:N | top:N | live, then optionally ,-positional ,-unigram "
            "(default random:8).",
        ),
        click.option("--redo", is_flag=True, help="Recompute results already in the database."),
        click.option("--backend", type=click.Choice(list(CHOICES["llm.backend"])), help="LLM backend."),
        click.option(
            "--llm-model", help="GGUF path or 'embedded' (llamacpp), served model name (openai), HF id (vllm)."
        ),
        click.option("--base-url", "base_urls", multiple=True, help="OpenAI-compatible endpoint; repeat for a fleet."),
        click.option("--prompts-dir", type=click.Path(file_okay=False), help="Folder of prompt files replacing ours."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


DEFAULT_LATENTS = "random:8"  # what `explain` and `score` take without --latents


def print_tally(stage: str, tally) -> None:
    """What a latent stage did: its counts and tokens, then why latents were skipped."""
    click.echo(
        f"{stage}: {tally.done} latents done, {tally.skipped} skipped, {tally.failed} "
        f"{'explanations' if stage == EXPLAIN else 'examples'} failed; {tally.prompts} prompts, "
        f"{tally.prompt_tokens:,} prompt tokens ({tally.cached_tokens:,} from cache), "
        f"{tally.output_tokens:,} output tokens, {tally.backend_s:.1f}s in the backend"
    )
    for why, n in tally.reasons.most_common():
        click.echo(f"  {n} latents: {printable(why)}")


@main.command()
@llm_options
@click.option("--explainer", type=click.Choice(list(CHOICES["explain.explainer"])))
@user_errors
def explain(config_path, explainer, redo, latents, **opts) -> None:
    """Explain latents with the LLM from their explainer examples (held out from scoring)."""
    from .batch import run_one_stage

    cfg = resolve_config(config_path, explainer=explainer, **opts)
    selection = latents if latents is not None else DEFAULT_LATENTS
    run = run_one_stage(cfg, EXPLAIN, latents=selection, redo=redo, argv=sys.argv)
    print_tally(EXPLAIN, run.tallies[EXPLAIN])
    click.echo(f"next: autointerp score --db {cfg.db} --latents {selection}")


@main.command()
@llm_options
@click.option("--explainer", type=click.Choice(list(CHOICES["explain.explainer"])), help="Whose explanations to score.")
@click.option("--scorers", help="Comma-separated, from: " + ",".join(CHOICES["score.scorers"]) + ".")
@user_errors
def score(config_path, explainer, scorers, redo, latents, **opts) -> None:
    """Score explanations (and a random-explanation control) on held-out examples."""
    from autointerp.store.db import ActivationStore

    from .batch import run_one_stage
    from .report.summary import score_summary, summary_table

    names = [s.strip() for s in scorers.split(",") if s.strip()] if scorers else None
    cfg = resolve_config(config_path, explainer=explainer, scorers=names, **opts)
    selection = latents if latents is not None else DEFAULT_LATENTS
    run = run_one_stage(cfg, SCORE, latents=selection, redo=redo, argv=sys.argv)
    print_tally(SCORE, run.tallies[SCORE])
    with ActivationStore.open(cfg.db, readonly=True) as store:
        run.console.print(summary_table(score_summary(store.results, cfg.explain.explainer, run.latents)))


@main.command()
@config_arguments
@click.option("--db", help="Database file (overrides the config's `db`).")
@click.option(
    "--latents",
    help="Which latents (overrides [batch] latents): 0-9,42 | random:N | top:N | live, then optionally "
    ",-positional ,-unigram.",
)
@click.option(
    "--redo",
    type=click.Choice(list(BATCH_STAGES)),
    help="Recompute stored results of this stage (explain also rescores). cache: set the database aside whole "
    "(renamed DB.before-redo-N, nothing deleted) and run every stage anew into DB.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and an estimate of LLM calls and tokens; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="With --dry-run: print the plan as one JSON object.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Run on a Ray cluster (pip install 'autointerp[ray]'): shards the cache over workers and spreads "
    "explain/score over LLM replicas. ADDRESS: HOST:6379, ray://HOST:10001, auto, or local; bare --ray uses "
    "[cluster] ray_address, else local (the cluster `ray start` made here, or a new one).",
)
@click.option("--no-check", is_flag=True, help=NO_CHECK_HELP)
@user_errors
def batch(config_path, config_option, db, latents, redo, dry_run, as_json, ray_address, no_check) -> None:
    """Cache -> explain -> score for a selection of latents. Resumable: rerun the same command after a crash.

    Without a config (CONFIG_PATH or --config) it runs the embedded default (offline). `autointerp init` writes a
    commented config."""
    cfg = resolve_config(
        one_config(config_path, config_option), db=db, latents=latents, check_reconstruction=False if no_check else None
    )
    if ray_address is not None:
        cfg.cluster.ray_address = ray_address or cfg.cluster.ray_address or "local"
    if dry_run:
        from .estimate import format_plan, plan

        p = plan(cfg)
        click.echo(json.dumps(p, sort_keys=True) if as_json else format_plan(p))
        return
    from .batch import BatchRunner

    if redo == CACHE:
        if Path(cfg.db).exists():
            from autointerp.store.db import ActivationStore

            click.echo(f"{cfg.db}: set aside as {ActivationStore.set_aside(cfg.db)}; caching anew")
        redo = None
    BatchRunner(cfg, redo=redo, argv=sys.argv).run()


@main.command()
@config_arguments
@source_options
@click.option(
    "--n-tokens", type=click.IntRange(min=1), help="Tokens of the corpus to check on, in whole sequences (default 512)."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def check(config_path, config_option, n_tokens, as_json, **overrides) -> int:
    """Does the coder fit the model and hook? Loads both as the cache does, runs a few hundred tokens of the corpus
    through and prints which forward serves the hook, the reconstruction's FVU, the next-token loss with it spliced
    in (beside clean and zero-ablated), L0, dead latents and a verdict. Exit status 1 when it is unusable."""
    from autointerp.engine.activations.reconstruction import CHECK_TOKENS

    from .check import format_check, run_check

    cfg = resolve_config(one_config(config_path, config_option), **overrides)
    with status(f"loading model {cfg.cache.model!r} and coder {cfg.cache.coder!r}, then checking ..."):
        result, load_s = run_check(cfg.cache, n_tokens or CHECK_TOKENS)
    if as_json:
        click.echo(json.dumps(dict(result.to_json(), load_seconds=load_s), sort_keys=True))
    else:
        click.echo(format_check(result, load_s))
    return 1 if result.unusable else 0


@main.command()
@click.argument("path", default="autointerp.toml", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@user_errors
def init(path, force) -> None:
    """Write a commented config with every key and its default (default: ./autointerp.toml)."""
    from importlib.resources import files

    if os.path.exists(path) and not force:
        raise ConfigError(f"{path} already exists (use --force to overwrite)")
    why = why_not_creatable(Path(path)) if not os.path.exists(path) else None
    if why:
        raise ConfigError(f"cannot write {path}: {why}")
    text = files("autointerp.engine").joinpath("data/autointerp.toml").read_text(encoding="utf-8")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    click.echo(f"wrote {path}; edit it, then: autointerp batch {path} --dry-run")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (explainer, prices).")
@click.option("--explainer", type=click.Choice(list(CHOICES["explain.explainer"])))
@click.option("--usd-per-mtok-prompt", type=float, help="Dollars per million prompt tokens, for the price estimate.")
@click.option("--usd-per-mtok-output", type=float, help="Dollars per million output tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--html", "html_path", type=click.Path(), help="Also write the report with its figures as one HTML file.")
@click.option("--png", "png_dir", type=click.Path(), help="Also write the figures as PNG files into this folder.")
@user_errors
def report(db, config_path, explainer, usd_per_mtok_prompt, usd_per_mtok_output, as_json, html_path, png_dir) -> None:
    """Per-scorer metrics beside the random control, failures, tokens and time per stage, price estimate;
    with --html / --png, figures of the run too."""

    from autointerp.store.db import ActivationStore

    from .report.summary import batch_report, print_report

    cfg = resolve_config(config_path, db=db, explainer=explainer)
    b = cfg.batch
    preflight(db, must_exist=True, writing=False)
    if html_path is not None or png_dir is not None:  # unusable outputs are refused before any work
        from .report.html import check_html_path, check_png_folder

        if html_path is not None:
            check_html_path(html_path)
        if png_dir is not None:
            check_png_folder(png_dir)
    written: list = []
    with ActivationStore.open(db, readonly=True) as store:
        result = batch_report(
            store,
            cfg.explain.explainer,
            None,
            usd_per_mtok_prompt if usd_per_mtok_prompt is not None else b.usd_per_million_prompt_tokens,
            usd_per_mtok_output if usd_per_mtok_output is not None else b.usd_per_million_output_tokens,
        )
        if html_path is not None or png_dir is not None:
            from .report.html import write_pictures

            with status("drawing figures ...") as spinner:
                written = write_pictures(
                    store,
                    result,
                    html_path=html_path,
                    png_folder=png_dir,
                    title=f"autointerp report: {Path(db).name}",
                    progress=spinner.update,
                )
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        print_report(result, stdout_console())
    for path in written:
        click.echo(f"wrote {path}", err=True)  # stderr: stdout stays the report (one JSON object with --json)


@main.command()
@click.argument("db_a", type=click.Path(dir_okay=False))
@click.argument("db_b", type=click.Path(dir_okay=False))
@click.option(
    "--explainer", type=click.Choice(list(CHOICES["explain.explainer"])), default="default", show_default=True
)
@click.option(
    "--bootstrap", "n_boot", type=click.IntRange(min=1), default=2000, show_default=True, help="Bootstrap resamples."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap's resampling.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def compare(db_a, db_b, explainer, n_boot, seed, as_json) -> None:
    """Two runs' scores side by side (e.g. SAE latents vs neurons): per scorer, B - A with a bootstrap CI and a
    Mann-Whitney test, beside the random-explanation control."""

    from .report.compare import compare as run
    from .report.compare import format_comparison

    for db in (db_a, db_b):
        preflight(db, must_exist=True, writing=False)
    result = run(db_a, db_b, explainer, n_boot=n_boot, seed=seed)
    for warning in result["warnings"]:
        say("warning", warning)
    if as_json:
        click.echo(json.dumps(result, sort_keys=True))
    else:
        stdout_console().print(format_comparison(result))


@main.command()
@click.argument("db_a", type=click.Path(dir_okay=False))
@click.argument("db_b", type=click.Path(dir_okay=False))
@click.option(
    "--explainer", type=click.Choice(list(CHOICES["explain.explainer"])), default="default", show_default=True
)
@click.option(
    "--other-explainer",
    type=click.Choice(list(CHOICES["explain.explainer"])),
    help="B's explainer (default: the same as --explainer).",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Rows and columns of one similarity tile (memory ~ 4 bytes x block^2).",
)
@click.option(
    "--exact-limit",
    type=click.IntRange(min=1),
    default=4096,
    show_default=True,
    help="Exact one-to-one matching while n_A x n_B <= this^2; beyond it, an approximation in blocks.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random-pairs control.")
@click.option("--no-store", is_flag=True, help="Only report: store no pairs in A (e.g. a read-only A).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, ... (auto: cuda when there is one).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def similarity(
    db_a, db_b, explainer, other_explainer, block_size, exact_limit, seed, no_store, device, as_json
) -> None:
    """Match A's latents with B's by the sentence-embedding similarity of their explanations (and decoder cosine
    where both share a space): best-match distributions, a one-to-one matching, a random-pairs control. The pairs
    are stored in A for the TUI."""

    from .similarity import format_similarity, progress_bar
    from .similarity import similarity as run

    for db in (db_a, db_b):
        preflight(db, must_exist=True, writing=False)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    with progress_bar() as progress:
        result = run(
            db_a,
            db_b,
            explainer=explainer,
            other_explainer=other_explainer,
            block_size=block_size,
            exact_limit=exact_limit,
            seed=seed,
            store=not no_store,
            device=device,
            progress=progress,
        )
    for warning in result.summary["warnings"]:
        say("warning", warning)
    if as_json:
        click.echo(json.dumps(result.summary, sort_keys=True))
    else:
        stdout_console().print(format_similarity(result.summary))


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(list(EXPORT_FORMATS)), default="json", show_default=True)
@click.option("--out", required=True, type=click.Path(), help="A folder (delphi, neuronpedia) or a file (json, csv).")
@click.option(
    "--explainer", type=click.Choice(list(CHOICES["explain.explainer"])), default="default", show_default=True
)
@click.option("--np-model-id", help="neuronpedia: the model id (default: the cache's model name, e.g. gpt2).")
@click.option(
    "--np-source-set",
    help="neuronpedia: the source set (default: autointerp-<res|mlp|att>-<width>, e.g. autointerp-res-16k).",
)
@user_errors
def export(db, fmt, out, explainer, np_model_id, np_source_set) -> None:
    """Export explanations and scores: delphi's results layout, or one flat JSON / CSV file."""
    from .export.formats import export as run

    cfg = resolve_config(None, db=db, explainer=explainer)
    result = run(cfg, fmt, out, model_id=np_model_id, source_set=np_source_set)  # each format takes its own
    click.echo(f"exported {result['latents']} latents to {result['path']} ({result['files']} files)")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--top", default=10, help="How many of the most frequent latents to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def info(db, top, as_json) -> None:
    """Summarise a database: provenance, cache size, most frequent latents."""
    from .info import print_info

    preflight(db, must_exist=True, writing=False)
    print_info(db, top, as_json)


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@user_errors
def annotate(db) -> None:
    """Store the vocabulary as text and each latent's logit-lens tokens and decoder neighbours (resumable)."""
    from autointerp.engine.activations.annotate import annotate_db

    preflight(db, must_exist=True, writing=True)
    warnings = []
    with status(f"loading the model and coder {db} was made with ..."):
        result = annotate_db(db, on_event=lambda kind, msg: warnings.append(msg) if kind == "warning" else None)
    for msg in warnings:
        click.echo(f"warning: {printable(msg)}", err=True)
    click.echo(f"{db}: {result.describe()}")


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config (its [cache] filter keys).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@user_errors
def filters(db, config_path, as_json) -> None:
    """Flag positional and unigram latents (the latter verified through the subject model), so selections can
    leave them out: --latents live,-positional,-unigram. Resumable; the cache stage runs it too."""
    from autointerp.engine.activations.filters import filters_db
    from autointerp.store.db import ActivationStore
    from autointerp.store.filters import FilterSettings, filter_counts

    settings = FilterSettings.of(resolve_config(config_path).cache) if config_path else None
    preflight(db, must_exist=True, writing=True)
    with status(f"loading the model and coder {db} was made with ..."):
        result = filters_db(db, settings)
    with ActivationStore.open(db, readonly=True) as store:
        counts = filter_counts(store)
    if as_json:
        click.echo(json.dumps({"computed": result.computed, "verified": result.verified, **counts}, sort_keys=True))
        return
    click.echo(
        f"{db}: {result.describe()}; {counts['positional']:,} positional, {counts['unigram_candidates']:,} unigram "
        f"candidates, {counts['unigram']:,} unigram latents"
    )


@main.command()
@click.argument("db", type=click.Path(dir_okay=False))
@user_errors
def upgrade(db) -> None:
    """Migrate a database to this autointerp's schema (additive: every row is kept)."""
    from autointerp.engine.activations.identity import note_cache_site
    from autointerp.engine.interpretation.interval_fill import fill_intervals
    from autointerp.store.db import ActivationStore
    from autointerp.store.schema import SCHEMA_VERSION

    before = preflight(db, must_exist=True, writing=True)
    if before == 0:
        raise UserError(f"{db}: not an autointerp database (an empty file): nothing to upgrade")
    with ActivationStore.open(db) as store:  # read-write: opening migrates
        problem = note_cache_site(store)
        filled = fill_intervals(store)  # score rows made before schema 13: their intervals, from the outcomes
    click.echo(
        f"{db}: schema v{SCHEMA_VERSION}" + (f"; 95% intervals computed for {filled:,} score rows" if filled else "")
    )
    if problem:
        click.echo(f"warning: {printable(problem)}")


@main.command("train-default-sae")
@click.option("--out", type=click.Path(file_okay=False), help="Folder to write (default: the packaged one).")
@click.option("--tokens", default=393_216, help="Training tokens.")
@user_errors
def train_default_sae(out, tokens) -> None:
    """Regenerate the embedded TopK SAE deterministically with eai-sparsify (about 10 min on 2 cores)."""
    from autointerp.engine.activations.train_default import train

    check_output_folder(out, "--out")
    report = train(out, tokens)
    click.echo(json.dumps(report, indent=1))


@main.command(context_settings={"ignore_unknown_options": True}, add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def tui(args) -> None:
    """Open the terminal UI on DB (same as autointerp-tui; --help lists DB, --serve, --port, --rater)."""
    # Started as its own program: the engine never imports Textual.
    os.execvp(sys.executable, [sys.executable, "-m", "autointerp.tui", *args])


main.add_command(bench)
main.add_command(probe)
main.add_command(retest)

if __name__ == "__main__":
    main()
