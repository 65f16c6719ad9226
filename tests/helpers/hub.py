"""A Hugging Face hub cache laid out by a test in huggingface_hub's own format, read with HF_HUB_OFFLINE=1 (no test
reaches the hub): `models--ORG--NAME/snapshots/<commit>/<path>`, `refs/main` holding the commit."""

from __future__ import annotations

import shutil
from pathlib import Path

REV = "0123456789abcdef0123456789abcdef01234567"


def lay_out(cache: Path, repo_id: str, files: dict[str, bytes], rev: str = REV) -> Path:
    """Files of a repo in huggingface_hub's cache layout; returns the snapshot folder."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(rev)
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        (snap / rel).parent.mkdir(parents=True, exist_ok=True)
        (snap / rel).write_bytes(data)
    return snap


def lay_out_folder(cache: Path, repo_id: str, folder: Path, rev: str = REV) -> Path:
    """A whole local folder (a saved model) as a repo's snapshot."""
    snap = lay_out(cache, repo_id, {}, rev)
    shutil.copytree(folder, snap, dirs_exist_ok=True)
    return snap
