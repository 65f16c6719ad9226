"""The subject model, run through TransformerLens 4.x `TransformerBridge`.

Only the layers up to the hooked one run (`stop_at_layer`) and only the hooked activation is
kept (`names_filter`). fp32 on CPU (bf16 is several times slower on CPUs without bf16 units),
CUDA when available.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autointerp.engine.defaults import EMBEDDED_MODEL_NAME, smollm2_gguf
from autointerp.store.errors import UserError


class ModelError(UserError):
    """A subject model or hook point that cannot be used, stated in one line."""


# Hook points we support, TransformerLens style, with the block they belong to.
HOOK_PATTERNS = {
    r"blocks\.(\d+)\.hook_resid_pre": "residual stream entering block N",
    r"blocks\.(\d+)\.hook_resid_mid": "residual stream between attention and MLP",
    r"blocks\.(\d+)\.hook_resid_post": "residual stream leaving block N",
    r"blocks\.(\d+)\.hook_mlp_out": "MLP output",
    r"blocks\.(\d+)\.hook_attn_out": "attention output",
    r"blocks\.(\d+)\.mlp\.hook_post": "MLP neurons (hidden activations)",
    r"blocks\.(\d+)\.mlp\.hook_in": "MLP input (what transcoders read)",
}


def hook_from_module_path(path: str, transcoder: bool = False) -> str:
    """Translate sparsify's Hugging Face module paths (`layers.N`, `layers.N.mlp`) to hook names."""
    m = re.fullmatch(r"(?:model\.)?layers\.(\d+)(\.mlp|\.self_attn)?", path)
    if not m:
        return path
    n, sub = m.group(1), m.group(2)
    if sub is None:
        return f"blocks.{n}.hook_resid_post"
    if sub == ".mlp":
        return f"blocks.{n}.mlp.hook_in" if transcoder else f"blocks.{n}.hook_mlp_out"
    return f"blocks.{n}.hook_attn_out"


def hook_layer(hook: str) -> int:
    for pattern in HOOK_PATTERNS:
        m = re.fullmatch(pattern, hook)
        if m:
            return int(m.group(1))
    known = "; ".join(p.replace(r"(\d+)", "N").replace("\\", "") for p in HOOK_PATTERNS)
    raise ModelError(f"unknown hook point {hook!r} (supported: {known}, or layers.N / layers.N.mlp)")


def check_hook_layer(hook: str, n_layers: int) -> int:
    layer = hook_layer(hook)
    if layer >= n_layers:
        raise ModelError(f"hook {hook!r}: the model has only {n_layers} blocks (0..{n_layers - 1})")
    return layer


def hook_width_of(hook: str, d_model: int, d_mlp: int) -> int:
    return d_mlp if hook.endswith("mlp.hook_post") else d_model


@dataclass(frozen=True)
class ModelShape:
    n_layers: int
    d_model: int
    d_mlp: int


def model_shape(spec: str) -> ModelShape | None:
    """Blocks and widths of a model from its config alone (no weights loaded); None when the config cannot be read
    here (loading the model then says why)."""
    from transformers import AutoConfig

    try:
        folder, _, _ = resolve_model_folder(spec)
        cfg = AutoConfig.from_pretrained(folder)
        return ModelShape(
            int(cfg.num_hidden_layers),
            int(cfg.hidden_size),
            int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)),
        )
    except ModelError:
        raise
    except Exception:  # noqa: BLE001 - any reason to fail is reported by the model load that follows
        return None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but torch sees no CUDA device")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)") from None


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _cache_root() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("AUTOINTERP_CACHE_DIR") or user_cache_dir("autointerp"))


@contextlib.contextmanager
def _quiet_gguf_loader():
    """transformers' GGUF dequantisation draws a tqdm bar of its own, deaf to its disable_progress_bar(): silence
    it for this call (a command's output is its result, or one error line)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    loud = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(loud, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = loud


def gguf_as_safetensors(gguf: Path) -> tuple[Path, str]:
    """Dequantise a GGUF once with transformers' loader; later loads read the cached safetensors."""
    digest = _file_hash(gguf)
    target = _cache_root() / "models" / f"{gguf.stem}-{digest}"
    if (target / "config.json").exists():
        return target, digest
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with _quiet_gguf_loader():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as e:  # transformers raises many types for unreadable GGUF files
        raise ModelError(f"cannot load GGUF {gguf} ({type(e).__name__}: {e})") from None
    # Saved weights are plain fp32 now: drop the quantisation markers so reloads skip the GGUF path.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers' own attribute, unset on purpose
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # A private temporary folder per process: two processes converting the same file at once (two batch
    # processes on one machine) each write their own, and the first rename wins.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".partial", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)  # atomic: a half-written cache is never used
    except OSError:
        if not (target / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loser's copy (nothing is left after a won rename)
    return target, digest


def resolve_model_folder(spec: str) -> tuple[str, str, str]:
    """A model spec -> (folder or HF id transformers can load, display name, content hash or "")."""
    if spec == "embedded":
        folder, digest = gguf_as_safetensors(smollm2_gguf())
        return str(folder), EMBEDDED_MODEL_NAME, digest
    if spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF file {path} does not exist")
        folder, digest = gguf_as_safetensors(path)
        return str(folder), str(path), digest
    return spec, spec, ""


def model_display_name(spec: str) -> str:
    """The name a model spec is recorded under (as `resolve_model_folder` gives it), without loading anything."""
    if spec == "embedded":
        return EMBEDDED_MODEL_NAME
    if spec.endswith(".gguf"):
        return str(Path(spec).expanduser())
    return spec


def load_tokenizer(spec: str):
    """Only the subject model's tokenizer (to show cached token ids as text), without the weights."""
    from transformers import AutoTokenizer

    folder, _, _ = resolve_model_folder(spec)
    try:
        return AutoTokenizer.from_pretrained(folder)
    except Exception as e:  # OSError, ValueError, hub errors...: one line names the model
        raise ModelError(
            f"cannot load the tokenizer of {spec!r} ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


class _Stop(Exception):
    """Raised by the capturing hook of the hot path: the blocks after the hooked one never run."""


def plain_twin(hf_model):
    """A second module tree over the same parameters and buffers (no tensor is copied): TransformerLens's bridge
    replaces the HF model's modules in place with its own wrappers, and this keeps the plain ones for the cache's
    hot path."""
    import copy
    import itertools

    memo = {id(t): t for t in itertools.chain(hf_model.parameters(), hf_model.buffers())}
    return copy.deepcopy(hf_model, memo)


@dataclass
class SubjectModel:
    bridge: Any  # a TransformerLens TransformerBridge
    tokenizer: Any
    name: str
    content_hash: str
    device: torch.device
    n_layers: int
    d_model: int
    d_mlp: int
    vocab_size: int
    start_id: int  # token at position 0 of every sequence
    sep_id: int  # token placed between documents
    plain: Any = None  # the HF model with its own modules (plain_twin), for the cache's hot path

    @classmethod
    def load(cls, spec: str = "embedded", device: str = "auto", dtype: str = "auto") -> "SubjectModel":
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        folder, name, digest = resolve_model_folder(spec)
        try:
            hf_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dt)
            tok = AutoTokenizer.from_pretrained(str(folder))
        except Exception as e:  # OSError, ValueError, hub errors...: one line names the model
            raise ModelError(f"cannot load model {spec!r} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if not digest:
            digest = getattr(hf_model.config, "_commit_hash", None) or _folder_hash(Path(folder))
        from transformer_lens.model_bridge import TransformerBridge

        plain = plain_twin(hf_model).eval()
        bridge = TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tok, device=str(dev), dtype=dt
        )
        bridge.eval()
        plain.to(dev)  # buffers the bridge moved were replaced, not shared (parameters are moved in place)
        cfg = hf_model.config
        sep = tok.eos_token_id if tok.eos_token_id is not None else tok.bos_token_id
        start = tok.bos_token_id if tok.bos_token_id is not None else sep
        if start is None:
            raise ModelError(f"model {spec!r}: tokenizer has neither a BOS nor an EOS token")
        return cls(
            bridge=bridge,
            tokenizer=tok,
            name=name,
            content_hash=digest,
            device=dev,
            n_layers=int(cfg.num_hidden_layers),
            d_model=int(cfg.hidden_size),
            d_mlp=int(getattr(cfg, "intermediate_size", 4 * cfg.hidden_size)),
            vocab_size=int(cfg.vocab_size),
            start_id=int(start),
            sep_id=int(sep),
            plain=plain,
        )

    # ---- hooks ----------------------------------------------------------------------------

    def check_hook(self, hook: str) -> int:
        layer = check_hook_layer(hook, self.n_layers)
        if hook not in self.bridge.hook_dict:
            raise ModelError(f"hook {hook!r} is not served by this model's TransformerLens bridge")
        return layer

    def hook_width(self, hook: str) -> int:
        return hook_width_of(hook, self.d_model, self.d_mlp)

    def _plain_site(self, hook: str):
        """(module, kind) of the plain HF module whose forward gives `hook`, or None where the hot path does not
        serve it (another layout than model.layers[N], or a hook read inside a block: those go through the bridge).
        Served: the residual stream entering / leaving a block, the attention and MLP outputs, the MLP's input (a
        transcoder's) and its neurons (the input of mlp.down_proj)."""
        decoder = self.plain.get_decoder() if self.plain is not None and hasattr(self.plain, "get_decoder") else None
        layers = getattr(decoder, "layers", None)
        if layers is None:
            return None
        m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook)
        if m:
            return layers[int(m.group(1))], m.group(2)
        m = re.fullmatch(r"blocks\.(\d+)\.(hook_attn_out|hook_mlp_out|mlp\.hook_in|mlp\.hook_post)", hook)
        if m is None:
            return None
        block = layers[int(m.group(1))]
        mlp = getattr(block, "mlp", None)
        site = {
            "hook_attn_out": (getattr(block, "self_attn", None), "post"),  # after o_proj: the block's attention output
            "hook_mlp_out": (mlp, "post"),
            "mlp.hook_in": (mlp, "pre"),  # what a transcoder reads: the normalised residual entering the MLP
            "mlp.hook_post": (getattr(mlp, "down_proj", None), "pre"),  # the MLP's neurons
        }[m.group(2)]
        return site if site[0] is not None else None

    def forward_kind(self, hook: str) -> str:
        """Which forward `hook_activations` takes for `hook` by default: "plain" or "bridge" (recorded with a cache,
        which resumes with the forward it began with)."""
        return "bridge" if self._plain_site(hook) is None else "plain"

    def hook_activations(self, tokens: torch.Tensor, hook: str, via_bridge: bool = False) -> torch.Tensor:
        """[B, T] token ids -> [B, T, width] activations at `hook`, running only the blocks needed.

        The hot path: a forward hook on the plain HF module, raising to stop the forward right there, so caching
        costs what a plain HF forward to the layer costs (the bridge's hook points and wrappers cost ~34% on the
        embedded model). `via_bridge`, and any hook the plain path does not serve, use TransformerLens."""
        site = None if via_bridge else self._plain_site(hook)
        if site is None:
            _, cache = self.bridge.run_with_cache(
                tokens.to(self.device), names_filter=hook, stop_at_layer=hook_layer(hook) + 1, return_cache_object=False
            )
            return cache[hook]
        module, kind = site
        got: dict[str, torch.Tensor] = {}

        def grab(value) -> None:
            got["x"] = value[0] if isinstance(value, tuple) else value
            raise _Stop

        if kind == "post":
            handle = module.register_forward_hook(lambda m, args, out: grab(out))
        else:  # the module's input: a block's hidden states, the MLP's input, or down_proj's input (the neurons)
            handle = module.register_forward_pre_hook(
                lambda m, args, kwargs: grab(args[0] if args else kwargs["hidden_states"]), with_kwargs=True
            )
        try:
            with torch.no_grad():  # activations are data, never part of a graph (as run_with_cache gives them)
                self.plain(tokens.to(self.device), use_cache=False)
        except _Stop:
            pass
        finally:
            handle.remove()
        return got["x"]

    def forward_to(self, tokens: torch.Tensor, layer: int, via_bridge: bool = False) -> None:
        """Bare forward through blocks 0..layer and no further, nothing kept (the benchmark's references): the plain
        HF model stopped after the block, or the bridge's forward with stop_at_layer."""
        if via_bridge or self._plain_site(f"blocks.{layer}.hook_resid_post") is None:
            self.bridge(tokens.to(self.device), stop_at_layer=layer + 1)
            return
        self.hook_activations(tokens, f"blocks.{layer}.hook_resid_post")


def _folder_hash(folder: Path) -> str:
    h = hashlib.sha256(str(folder).encode())
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file():
                h.update(f.name.encode() + str(f.stat().st_size).encode())
    return h.hexdigest()[:16]
