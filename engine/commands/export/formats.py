"""The export formats by name, each `(module, function)` imported only when that format is asked for (as vLLM's
model registry names its models): the CLI's `--format` choices come from here, and a new format is one module with
an `export_<name>(cfg, out) -> {"files", "latents", "path", ...}` function and one line here."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from autointerp.engine.config import Config

from .common import ExportError

# name -> (module, function), in the order `--format` lists them.
EXPORT_FORMATS: dict[str, tuple[str, str]] = {
    # delphi's folders of explanations and per-example scores
    "delphi": ("autointerp.engine.commands.export.delphi", "export_delphi"),
    "json": ("autointerp.engine.commands.export.flat", "export_json"),  # one JSON list, a row per explained latent
    "csv": ("autointerp.engine.commands.export.flat", "export_csv"),  # the same rows as one CSV table
    # a Neuronpedia dataset folder (batched JSONL.gz tables)
    "neuronpedia": ("autointerp.engine.commands.export.neuronpedia", "export_neuronpedia"),
}


def export(cfg: Config, fmt: str, out: str | Path, **options) -> dict:
    """Write the export in format `fmt`; returns {"files": n, "latents": n, "path": ...}. Paths and the database are
    checked before anything is written, and files appear whole or not at all."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(EXPORT_FORMATS)}")
    module, function = EXPORT_FORMATS[fmt]
    write = getattr(importlib.import_module(module), function)
    given = {k: v for k, v in options.items() if v is not None}  # a format's own options (--np-model-id, ...)
    unknown = sorted(set(given) - set(inspect.signature(write).parameters))
    if unknown:
        raise ExportError(f"--format {fmt} takes no {' or '.join(unknown)} (those options are another format's)")
    return write(cfg, out, **given)
