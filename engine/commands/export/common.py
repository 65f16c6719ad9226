"""What every export format shares: its one-line error, where its output goes (checked before anything is written),
and writing that leaves the old output or the new one whole, never half of one."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from autointerp.engine.config import Config
from autointerp.store.db import ActivationStore, preflight, why_not_creatable
from autointerp.store.errors import UserError


class ExportError(UserError):
    """An output path that cannot be written, stated in one line."""


def safe_name(text: str) -> str:
    """A file name from database text (a hook, a scorer): never a path out of the export folder."""
    return re.sub(r"[^\w.\-]", "_", str(text)).lstrip(".") or "_"


def _writable(out: Path) -> Path:
    why = why_not_creatable(out) or (f"{out} is not writable" if out.exists() and not os.access(out, os.W_OK) else None)
    if why:
        raise ExportError(f"cannot write --out {out}: {why}")
    return out


def file_output(out: str | Path, ext: str, db: str | Path) -> Path:
    """Where a one-file export goes: given a folder (an existing one, or a path ending in a slash) it writes
    `<database name>.<ext>` inside it."""
    text = str(out)
    out = Path(out).expanduser()
    if text.endswith(("/", os.sep)) or out.is_dir():
        out = out / f"{Path(db).stem}.{ext}"
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder")
    return _writable(out)


def folder_output(out: str | Path, layout: str) -> Path:
    """Where a folder export (`layout`: whose layout it is, for the refusal) goes; an existing file is refused."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; {layout} layout is a folder: name a folder")
    return _writable(out)


def check_database(cfg: Config) -> None:
    """The database checked before the output path or anything else (store/db.py `preflight`)."""
    preflight(cfg.db, must_exist=True, writing=False)


def open_results(cfg: Config) -> ActivationStore:
    """The checked database, read-only; refused in one line when it holds no cache yet."""
    store = ActivationStore.open(cfg.db, readonly=True)
    if store.provenance is None:
        store.close()
        raise ExportError(f"{cfg.db} holds no activation cache yet: nothing to export")
    return store


def replace_file(out: Path, write: Callable) -> None:
    """Write through a temporary file beside `out`, then rename it over `out`: a killed export leaves the old
    file (or none), never half of one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_into_place(tmp: Path, out: Path) -> None:
    """Rename a finished folder to `out`; an existing `out` is moved aside first and removed after, so a reader
    sees the old folder or the new one, never a mix."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def cannot_write(out: Path, e: OSError) -> ExportError:
    """The one line an OSError met while writing the export becomes."""
    return ExportError(f"cannot write --out {out} ({e.strerror or e})")
