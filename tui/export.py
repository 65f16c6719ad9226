"""*Export this latent* (the palette): the shown latent's detail as JSON in the current directory. No engine code:
the detail is the Browser's, written as it is."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from autointerp.store.views import LatentDetail


def export_detail(detail: LatentDetail) -> Path:
    """Write `autointerp-latent-N.json` in the current directory; OSError when it cannot be written."""
    path = Path.cwd() / f"autointerp-latent-{detail.latent}.json"
    path.write_text(json.dumps(detail_json(detail), indent=1, default=_jsonable), encoding="utf-8")
    return path


def detail_json(detail: LatentDetail) -> dict:
    # The vocabulary is the whole file's (shared, 50k+ tokens), not this latent's: left out.
    return {f.name: getattr(detail, f.name) for f in dataclasses.fields(detail) if f.name != "vocab"}


def _jsonable(value):
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")
