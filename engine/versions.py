"""Versions of the packages that shape results, recorded as provenance."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("autointerp", "torch", "transformer-lens", "transformers", "numpy", "sqlite-utils", "llama-cpp-python")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
