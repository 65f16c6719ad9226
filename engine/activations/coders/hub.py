"""Sparse coders named by hub instead of by folder: a spec -> a checkpoint in the Hugging Face cache, plus the model and
hook it was trained on.

- `saelens:RELEASE/SAE_ID[@REVISION]`: an SAE of SAELens's directory of pretrained SAEs (the `sae-lens` package's
  own `pretrained_saes.yaml`, read through its API). RELEASE never holds a slash; SAE_ID may
  (`saelens:gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical`). Readable: SAELens-format folders,
  Gemma Scope (`gemma_2`) and dictionary_learning (`dictionary_learning_1`: SAEBench's ae.pt + config.json).
- `hf:ORG/REPO[/PATH][@REVISION]`: a folder of a hub repo: a sparsify run (hookpoint subfolders `layers.N/` with
  cfg.json + sae.safetensors; `hook` picks one), a single sparsify, SAELens or dictionary_learning checkpoint folder,
  or a Gemma Scope folder (`hf:google/gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82`, params.npz).

`locate` reads only what names the model and hook (the directory entry, cfg.json files); `settle` checks them
against the config, and only then does `download` fetch the weights, so a mismatch costs no large download.
Everything goes through huggingface_hub into its own cache (downloaded once; `HF_HUB_OFFLINE=1` reads only the cache).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import json
import logging
import os
import posixpath
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from . import dictionary_learning
from .base import CoderError

log = logging.getLogger(__name__)

SAELENS_PREFIX, HF_PREFIX = "saelens:", "hf:"
GEMMA_SCOPE_REPO = re.compile(r"gemma-scope-(2b|9b|27b)-(pt|it)-(res|mlp|att)")
INSTALL_SAELENS = "pip install --no-deps 'sae-lens>=6.50'"


def is_hub_spec(spec: str) -> bool:
    return spec.startswith((SAELENS_PREFIX, HF_PREFIX))


@dataclass
class HubCoder:
    """Where a hub-named coder lives and what it was trained on, known before its weights are fetched."""

    spec: str  # as the config gave it
    repo_id: str
    revision: str  # the commit every file is read at
    folder: str  # the checkpoint's folder inside the repo ("" = the repo's root)
    kind: str  # saelens | sparsify | gemmascope | dictionary_learning
    model: str | None  # the model it was trained on, as its checkpoint or SAELens's directory names it
    hook: str | None  # the hook it reads: a TransformerLens name, or (sparsify) the hookpoint folder's name
    transcoder: bool = False
    name: str = ""  # the spec without its revision, pointing at the checkpoint folder itself
    notes: list[str] = field(default_factory=list)  # what the checkpoint asks that autointerp does not do

    @property
    def pinned(self) -> str:
        """The spec naming exactly this checkpoint at this commit: what a cache records as its coder."""
        return f"{self.name}@{self.revision}"

    def files(self) -> list[str]:
        """The repo files the coder loads from, small ones first."""
        names = {
            "saelens": ["cfg.json", "sae_weights.safetensors"],
            "sparsify": ["cfg.json", "sae.safetensors"],
            "dictionary_learning": ["config.json", "ae.pt"],
        }
        return [posixpath.join(self.folder, n) for n in names.get(self.kind, ["params.npz"])]


# ---- the Hugging Face cache ----------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """HF_HUB_OFFLINE as the environment says now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def cache_dir() -> str:
    """The hub cache as the environment says now (HF_HUB_CACHE, else HF_HOME/hub), like huggingface_hub's own."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


@contextlib.contextmanager
def _quiet_retries():
    """huggingface_hub logs each retry of an unreachable hub as a warning on stderr (five, ~23 s, per file): the one
    error line that follows (or the cached file it falls back to) says what matters, so they are not shown."""
    logger = logging.getLogger("huggingface_hub.utils._http")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Repo:
    """One repo at one revision, read through huggingface_hub; every hub failure becomes one CoderError line."""

    def __init__(self, spec: str, repo_id: str, revision: str):
        self.spec, self.repo_id, self.revision = spec, repo_id, revision
        self.offline, self.cache = offline(), cache_dir()
        self.local_only = self.offline  # also once the hub proved unreachable: the rest is read from the cache

    def not_cached(self, what: str) -> CoderError:
        why = "HF_HUB_OFFLINE is set" if self.offline else "the Hugging Face hub cannot be reached"
        return CoderError(
            f"coder {self.spec}: {self.repo_id}/{what} is not in the local Hugging Face cache ({self.cache}) and "
            f"{why}: run the same command once with network access (HF_HUB_OFFLINE unset) to download it, or copy "
            "that cache from a machine that has it"
        )

    def _unreachable(self) -> None:
        if not self.local_only:
            log.info("the Hugging Face hub cannot be reached: reading %s from the local cache only", self.repo_id)
        self.local_only = True

    def _fail(self, e: Exception, what: str) -> CoderError:
        from huggingface_hub.errors import (
            GatedRepoError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        if isinstance(e, LocalEntryNotFoundError):
            return self.not_cached(what)
        if isinstance(e, GatedRepoError):
            return CoderError(
                f"coder {self.spec}: the hub repo {self.repo_id} is gated: accept its terms on huggingface.co and "
                "log in (`hf auth login` or HF_TOKEN)"
            )
        if isinstance(e, RepositoryNotFoundError):
            return CoderError(f"coder {self.spec}: no hub repo {self.repo_id} (or it is private: log in first)")
        if isinstance(e, RevisionNotFoundError):
            return CoderError(f"coder {self.spec}: the hub repo {self.repo_id} has no revision {self.revision!r}")
        first = (str(e).strip().splitlines() or [""])[0]
        return CoderError(f"coder {self.spec}: cannot fetch {what} from {self.repo_id} ({type(e).__name__}: {first})")

    def get(self, filename: str) -> Path | None:
        """The local path of a repo file, downloaded into the cache the first time. None when the repo has no such
        file; read from the cache only, a file that is not cached is None too (the caller says what it missed)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

        try:
            with _quiet_retries():
                path = hf_hub_download(
                    self.repo_id,
                    filename,
                    revision=self.revision,
                    cache_dir=self.cache,
                    local_files_only=self.local_only,
                )
        except LocalEntryNotFoundError:  # not cached, and offline or the hub unreachable
            if not self.local_only:
                self._unreachable()
            return None
        except EntryNotFoundError:  # the hub says the repo has no such file
            return None
        except Exception as e:  # noqa: BLE001 - http, auth and hub errors: one line, named
            raise self._fail(e, filename) from None
        self._pin(Path(path))
        return Path(path)

    def _pin(self, path: Path) -> None:
        """Read every later file at the commit the first one came from (snapshots/<commit>/...), so a branch that
        moves between two downloads cannot mix two versions of a checkpoint."""
        for parent in path.parents:
            if parent.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", parent.name):
                self.revision = parent.name
                return

    def pin_commit(self, what: str) -> None:
        """Pin the revision to its commit without downloading a file (for a checkpoint with no small file to read
        first): the hub's answer, or, offline or unreachable, the commit the cache's ref records."""
        if re.fullmatch(r"[0-9a-f]{40}", self.revision):
            return
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.file_download import repo_folder_name

        if not self.local_only:
            sha = None
            try:
                with _quiet_retries():
                    sha = HfApi().model_info(self.repo_id, revision=self.revision).sha
            except HfHubHTTPError as e:  # no such repo or revision, gated, ...: the hub answered
                raise self._fail(e, what) from None
            except Exception:  # noqa: BLE001 - unreachable: the cache's ref, as huggingface_hub's downloads do
                self._unreachable()
            if sha:
                self.revision = sha
                return
        ref = Path(self.cache) / repo_folder_name(repo_id=self.repo_id, repo_type="model") / "refs" / self.revision
        try:
            self.revision = ref.read_text().strip()
        except OSError:
            raise self.not_cached(what) from None

    def listing(self, patterns: list[str], what: str) -> Path:
        """The local snapshot folder after fetching the files matching `patterns` (all small): what a folder holds,
        when only its listing can tell (read from the cache only: what the cache holds of it). `what` names the
        folder in errors."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError

        try:
            with _quiet_retries():
                folder = snapshot_download(
                    self.repo_id,
                    revision=self.revision,
                    cache_dir=self.cache,
                    allow_patterns=patterns,
                    local_files_only=self.local_only,
                )
        except IncompleteSnapshotError as e:  # offline with part of the folder cached: use that part
            folder = e.snapshot_path
        except Exception as e:  # noqa: BLE001 - as in get()
            raise self._fail(e, what) from None
        self._pin(Path(folder) / "x")
        return Path(folder)

    def fetch(self, filename: str) -> Path:
        path = self.get(filename)
        if path is None:
            if self.local_only:
                raise self.not_cached(filename)
            raise CoderError(f"coder {self.spec}: the hub repo {self.repo_id} has no file {filename}")
        return path


def _read_json(path: Path, spec: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CoderError(f"coder {spec}: {path.name} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CoderError(f"coder {spec}: {path.name} is not a JSON object")
    return data


# ---- SAELens's directory of pretrained SAEs ------------------------------------------------------------------


@functools.cache
def saelens_directory() -> dict:
    """release -> PretrainedSAELookup (repo_id, model, conversion_func, saes_map: sae id -> path in the repo), from
    the installed `sae-lens` package's own `get_pretrained_saes_directory()`.

    `import sae_lens` runs its package __init__, which imports TransformerLens's HookedTransformer (gone in
    TransformerLens 4, which we need) and fails. The directory module itself needs only yaml and the package's data
    file, which it finds with `importlib.resources.files("sae_lens")`: that looks the package up in sys.modules, so
    for this one load a bare `sae_lens` module (its real spec and __path__, its __init__ not run) stands there, and
    the directory module is loaded straight from its file. A real `sae_lens` already imported is used as it is."""
    if "sae_lens" in sys.modules and getattr(sys.modules["sae_lens"], "__file__", None):
        try:
            from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

            return get_pretrained_saes_directory()
        except ImportError:
            pass
    spec = importlib.util.find_spec("sae_lens")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise CoderError(f"saelens: coders need SAELens's directory of pretrained SAEs: {INSTALL_SAELENS}")
    source = Path(next(iter(spec.submodule_search_locations))) / "loading" / "pretrained_saes_directory.py"
    name = "sae_lens.loading.pretrained_saes_directory"
    saved = sys.modules.get("sae_lens")
    sys.modules["sae_lens"] = importlib.util.module_from_spec(spec)  # bare: module_from_spec does not execute it
    try:
        module_spec = importlib.util.spec_from_file_location(name, source)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"no {source}")
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module.get_pretrained_saes_directory()
    except Exception as e:  # noqa: BLE001 - a missing yaml, a changed file layout: one line says so
        raise CoderError(
            f"cannot read SAELens's pretrained SAE directory ({type(e).__name__}: {e}); reinstall it: {INSTALL_SAELENS}"
        ) from None
    finally:
        if saved is None:
            sys.modules.pop("sae_lens", None)
        else:
            sys.modules["sae_lens"] = saved


def _closest(word: str, options, what: str, where: str = "") -> str:
    options = list(options)
    close = difflib.get_close_matches(word, options, n=5, cutoff=0.5)
    if close:
        return f"unknown {what} {word!r}{where} (closest: {', '.join(close)})"
    return f"unknown {what} {word!r}{where} (no close match among {len(options)})"


# ---- model names ----------------------------------------------------------------------------------------------


@functools.cache
def _alias_table() -> dict[str, str] | None:
    """lowercased alias or official name -> official Hugging Face id, from TransformerLens's own alias table (which
    knows `gpt2-small` is `gpt2` and `gemma-2-2b` is `google/gemma-2-2b`, the names SAELens records). Read from its
    data file (`transformer_lens/tools/model_registry/data/model_aliases.json`, the table
    `transformer_lens.supported_models` loads), because importing transformer_lens costs seconds that a mismatch,
    refused before any model loads, should not pay; the module itself if the file moved; None if neither exists."""
    table = None
    spec = importlib.util.find_spec("transformer_lens")
    if spec is not None and spec.submodule_search_locations:
        data = Path(next(iter(spec.submodule_search_locations))) / "tools/model_registry/data/model_aliases.json"
        try:
            table = json.loads(data.read_text(encoding="utf-8"))["aliases"]
        except (OSError, ValueError, KeyError, TypeError):
            table = None
    if not isinstance(table, dict):
        try:
            from transformer_lens.supported_models import MODEL_ALIASES as table
        except Exception:  # noqa: BLE001 - any TransformerLens without the table: fall back to normalising names
            return None
    out: dict[str, str] = {}
    for official, aliases in table.items():
        out[official.lower()] = official
        for alias in aliases or ():
            out.setdefault(str(alias).lower(), official)
    return out


def _strip_revision(model: str) -> str:
    return model if "@" not in model or Path(model).expanduser().exists() else model.rpartition("@")[0]


def hub_model_id(name: str) -> str:
    """The Hugging Face id of a model a checkpoint names (a TransformerLens alias or already an id)."""
    table = _alias_table() or {}
    return table.get(name.lower(), name)


def model_key(name: str) -> str:
    """What two names of one model share: the official id (through TransformerLens's aliases), lowercased, without its
    organisation (`google/gemma-2-2b` and `gemma-2-2b`, `meta-llama/Llama-3.1-8B` and `Llama-3.1-8B`). Without
    TransformerLens's table, `-small` is dropped too (TransformerLens calls gpt2 `gpt2-small`)."""
    table = _alias_table()
    name = _strip_revision(name.strip())
    official = (table or {}).get(name.lower(), name)
    key = official.lower().rsplit("/", 1)[-1]
    return key.removesuffix("-small") if table is None else key


def _local_model_names(model: str) -> list[str] | None:
    """The names a local model (folder, .gguf, tiny:) may go by; None when `model` is a hub id."""
    if model.startswith("tiny:"):
        return []
    path = Path(model).expanduser()
    if not path.exists():
        return None
    names = [path.stem if path.is_file() else path.name]
    try:
        recorded = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_name_or_path")
        if isinstance(recorded, str) and recorded:
            names.append(recorded)
    except (OSError, ValueError, AttributeError):
        pass
    return names


def _same_hook(a: str, b: str, transcoder: bool) -> bool:
    from autointerp.engine.activations.model import hook_from_module_path

    a, b = hook_from_module_path(a, transcoder), hook_from_module_path(b, transcoder)
    if a == b:
        return True
    # the residual stream leaving block N is the one entering block N + 1
    ma = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", a)
    mb = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", b)
    if ma and mb and ma.group(2) != mb.group(2):
        pre, post = (ma, mb) if ma.group(2) == "pre" else (mb, ma)
        return int(pre.group(1)) == int(post.group(1)) + 1
    return False


def settle(h: HubCoder, model: str, hook: str) -> tuple[str, str]:
    """The model and hook to run a hub-named coder with: what the checkpoint recorded where the config leaves them
    unset (`model = "embedded"`, the default, counts as unset here: the embedded model has no hub SAEs), and a
    CoderError where the config names another model or hook than the checkpoint's."""
    for note in h.notes:
        log.warning("coder %s: %s", h.spec, note)
    if model in ("", "embedded"):
        if not h.model:
            raise CoderError(f"coder {h.spec} does not record the model it was trained on: set `model`")
        model = hub_model_id(h.model)
    elif h.model and model_key(model) != model_key(h.model):
        local = _local_model_names(model)
        if local is None:
            raise CoderError(
                f"coder {h.spec} was trained on {h.model!r}, not on model {model!r}: set model to "
                f"{hub_model_id(h.model)!r} (or leave it unset)"
            )
        if not any(model_key(n) == model_key(h.model) for n in local):
            log.warning(
                "cannot tell whether local model %s is %r, which coder %s was trained on", model, h.model, h.spec
            )
    if not hook:
        if not h.hook:
            raise CoderError(f"coder {h.spec} does not record the hook it reads: set `hook`")
        hook = h.hook
    elif h.hook and not _same_hook(hook, h.hook, h.transcoder):
        raise CoderError(
            f"coder {h.spec} reads hook {h.hook!r}, not {hook!r}: set hook to {h.hook!r} (or leave it unset)"
        )
    return model, hook


# ---- specs ----------------------------------------------------------------------------------------------------


def _split(spec: str, prefix: str) -> tuple[str, str]:
    body = spec[len(prefix) :]
    revision = "main"
    if "@" in body:
        body, _, revision = body.rpartition("@")
        if not revision:
            raise CoderError(f"coder {spec!r}: an empty revision after '@'")
    return body.strip("/"), revision


def _gemma_scope(h_spec: str, repo_id: str, folder: str) -> tuple[str, str]:
    """(model, hook) of a Gemma Scope folder, from its repo's name and its path, as SAELens's gemma_2 loader
    reads them: `gemma-scope-2b-pt-res` + `layer_12/...` -> gemma-2-2b, blocks.12.hook_resid_post."""
    m = GEMMA_SCOPE_REPO.search(repo_id)
    layer = re.search(r"layer_(\d+)", folder)
    if m is not None and folder.startswith("embedding"):
        raise CoderError(
            f"coder {h_spec}: Gemma Scope's embedding SAEs read hook_embed, which autointerp does not cache"
        )
    if m is None or layer is None:
        raise CoderError(
            f"coder {h_spec}: not a Gemma Scope folder (expected gemma-scope-SIZE-pt|it-res|mlp|att/layer_N/...)"
        )
    size, variant, site = m.groups()
    model = f"gemma-2-{size}" + ("-it" if variant == "it" else "")
    n = layer.group(1)
    hook = {"res": f"blocks.{n}.hook_resid_post", "mlp": f"blocks.{n}.hook_mlp_out", "att": f"blocks.{n}.attn.hook_z"}
    return model, hook[site]


def _saelens_cfg_identity(cfg: dict) -> tuple[str | None, str | None]:
    """(model, hook) a SAELens cfg.json records: flat before SAELens 6 (`hook_point` before `hook_name`), under
    `metadata` since."""
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = cfg.get("hook_name") or meta.get("hook_name") or cfg.get("hook_point")
    model = cfg.get("model_name") or meta.get("model_name")
    return (model if isinstance(model, str) else None), (hook if isinstance(hook, str) else None)


def _locate_saelens(spec: str) -> HubCoder:
    body, revision = _split(spec, SAELENS_PREFIX)
    release, _, sae_id = body.partition("/")
    if not release or not sae_id:
        raise CoderError(f"coder {spec!r}: write a SAELens SAE as saelens:RELEASE/SAE_ID")
    directory = saelens_directory()
    entry = directory.get(release)
    if entry is None:
        raise CoderError(f"coder {spec}: " + _closest(release, directory, "SAELens release"))
    if sae_id not in entry.saes_map:
        raise CoderError(f"coder {spec}: " + _closest(sae_id, entry.saes_map, "SAE id", f" in release {release}"))
    folder = str(entry.saes_map[sae_id]).strip("/")
    name = f"{SAELENS_PREFIX}{release}/{sae_id}"
    repo = _Repo(spec, entry.repo_id, revision)
    h = HubCoder(spec, entry.repo_id, revision, folder, "saelens", entry.model, None, name=name)
    overrides = entry.config_overrides or {}
    if isinstance(overrides, dict) and overrides.get("model_from_pretrained_kwargs"):
        # e.g. gpt2-small-res-jb was trained on TransformerLens's processed GPT-2 (center_writing_weights): our
        # activations are the unprocessed model's, which the SAE reads a little differently.
        h.notes.append(f"SAELens loads its model with {overrides['model_from_pretrained_kwargs']}; autointerp does not")
    if entry.conversion_func == "gemma_2":
        h.kind = "gemmascope"
        _, h.hook = _gemma_scope(spec, entry.repo_id, folder)
        repo.pin_commit(folder)
    elif entry.conversion_func == "dictionary_learning_1":  # SAEBench's SAEs: ae.pt + config.json
        h.kind = "dictionary_learning"
        trainer = dictionary_learning.read_config(repo.fetch(posixpath.join(folder, "config.json")), f"coder {spec}")
        # the hook config.json's submodule_name says, else the one SAELens's id names (blocks.3.hook_resid_post__...)
        h.hook = dictionary_learning.hook_of(trainer) or dictionary_learning.hook_from_name(sae_id)
    elif entry.conversion_func:
        raise CoderError(
            f"coder {spec}: SAELens reads release {release} with its {entry.conversion_func!r} converter, which "
            "autointerp cannot read (it reads SAELens-format folders, Gemma Scope params.npz and dictionary_learning "
            "ae.pt)"
        )
    else:
        cfg = _read_json(repo.fetch(posixpath.join(folder, "cfg.json")), spec)
        _, h.hook = _saelens_cfg_identity(cfg)
    h.revision = repo.revision
    return h


def _locate_hf(spec: str, hook: str) -> HubCoder:
    body, revision = _split(spec, HF_PREFIX)
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2:
        raise CoderError(f"coder {spec!r}: write a hub coder as hf:ORG/REPO[/PATH][@REVISION]")
    repo_id, folder = "/".join(parts[:2]), "/".join(parts[2:])
    repo = _Repo(spec, repo_id, revision)
    if GEMMA_SCOPE_REPO.search(repo_id) and re.search(r"layer_\d+|^embedding", folder):
        gs_model, gs_hook = _gemma_scope(spec, repo_id, folder)
        repo.pin_commit(folder)
        return HubCoder(
            spec, repo_id, repo.revision, folder, "gemmascope", gs_model, gs_hook, name=f"{HF_PREFIX}{body}"
        )
    cfg_path = repo.get(posixpath.join(folder, "cfg.json"))
    if cfg_path is None:  # a dictionary_learning folder (SAEBench): ae.pt + config.json with a `trainer` section
        dl = _dictionary_learning_folder(repo, folder, f"{HF_PREFIX}{body}")
        if dl is not None:
            return dl
    if cfg_path is None and hook:  # a sparsify run folder: `hook` names the hookpoint subfolder
        cfg_path = repo.get(posixpath.join(folder, hook, "cfg.json"))
        folder = posixpath.join(folder, hook) if cfg_path is not None else folder
    if cfg_path is None:
        folder = posixpath.join(folder, _pick_hookpoint(repo, folder, hook))
        cfg_path = repo.fetch(posixpath.join(folder, "cfg.json"))
    cfg = _read_json(cfg_path, spec)
    name = f"{HF_PREFIX}{repo_id}/{folder}".rstrip("/")
    if "d_sae" in cfg or "hook_name" in cfg or "hook_point" in cfg or "metadata" in cfg:  # SAELens's format
        model, recorded_hook = _saelens_cfg_identity(cfg)
        h = HubCoder(spec, repo_id, revision, folder, "saelens", model, recorded_hook, name=name)
    else:  # sparsify: the folder is named after its hookpoint; the run folder's config.json names the model
        run_cfg = repo.get(posixpath.join(posixpath.dirname(folder), "config.json")) if folder else None
        recorded = _read_json(run_cfg, spec).get("model") if run_cfg is not None else None
        h = HubCoder(
            spec,
            repo_id,
            revision,
            folder,
            "sparsify",
            recorded if isinstance(recorded, str) else None,
            posixpath.basename(folder) or None,
            transcoder=bool(cfg.get("transcode", False)),
            name=name,
        )
    h.revision = repo.revision
    return h


def _dictionary_learning_folder(repo: _Repo, folder: str, name: str) -> HubCoder | None:
    """A dictionary_learning checkpoint folder, known by its config.json's `trainer` section (a sparsify run's
    config.json has none); None when the folder is not one."""
    path = repo.get(posixpath.join(folder, "config.json"))
    if path is None or not isinstance(_read_json(path, repo.spec).get("trainer"), dict):
        return None
    trainer = dictionary_learning.read_config(path, f"coder {repo.spec}")
    model = trainer.get("lm_name")
    hook = dictionary_learning.hook_of(trainer) or dictionary_learning.hook_from_name(folder)
    model = model if isinstance(model, str) and model else None
    return HubCoder(repo.spec, repo.repo_id, repo.revision, folder, "dictionary_learning", model, hook, name=name)


def _pick_hookpoint(repo: _Repo, folder: str, hook: str) -> str:
    """The hookpoint subfolder of a sparsify run folder: the one `hook` names (as a module path or as the hook it
    maps to), or the only one."""
    prefix = f"{folder}/" if folder else ""
    root = repo.listing([f"{prefix}*/cfg.json", f"{prefix}config.json"], f"{prefix}*/cfg.json") / folder
    found = sorted(p.parent.name for p in root.glob("*/cfg.json")) if root.is_dir() else []
    if not found:
        where = f"{repo.repo_id}/{folder}".rstrip("/")
        if repo.local_only:
            raise repo.not_cached(f"{prefix}cfg.json")
        raise CoderError(f"coder {repo.spec}: {where} holds no cfg.json, neither itself nor in hookpoint subfolders")
    if hook:
        from autointerp.engine.activations.model import hook_from_module_path

        for name in found:
            if _same_hook(name, hook, False) or hook_from_module_path(name, True) == hook:
                return name
        raise CoderError(f"coder {repo.spec}: no hookpoint folder for hook {hook!r} (there are: {', '.join(found)})")
    if len(found) > 1:
        raise CoderError(f"coder {repo.spec} holds {len(found)} hookpoints: set hook to one of {', '.join(found)}")
    return found[0]


def locate(spec: str, hook: str = "") -> HubCoder:
    """Resolve a hub spec as far as its identity: which files, at which commit, trained on which model and hook.
    Reads the directory and the checkpoint's small files only. `hook` picks a sparsify run's hookpoint folder."""
    if spec.startswith(SAELENS_PREFIX):
        h = _locate_saelens(spec)
    elif spec.startswith(HF_PREFIX):
        h = _locate_hf(spec, hook)
    else:
        raise CoderError(f"coder {spec!r} is not a hub spec (saelens:RELEASE/SAE_ID or hf:ORG/REPO[/PATH])")
    return h


def download(h: HubCoder) -> Path:
    """Fetch the checkpoint's files (small ones first; huggingface_hub shows a progress bar for each download) at
    the located commit, and return the local checkpoint folder to load."""
    repo = _Repo(h.spec, h.repo_id, h.revision)
    paths = [repo.fetch(f) for f in h.files()]
    return paths[0].parent
