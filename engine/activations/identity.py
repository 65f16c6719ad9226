"""Whether a database may take this cache: made from the same inputs (model, hook, coder, corpus), and not from a
site the plain path read wrongly before the post-norm fix. Read-only checks, run before anything is written."""

from __future__ import annotations

from pathlib import Path

from autointerp.store.db import ActivationStore, StoreError

from .setup import cache_site_problem


def check_identity(db_path: str | Path, identity: dict) -> int:
    """Refuse (read-only, before anything is written) a database whose cache was made from other inputs; returns how
    many chunks it already holds (0 when there is no file or no cache yet)."""
    if not Path(db_path).exists():
        return 0
    with ActivationStore.open(db_path, readonly=True, allow_older=True) as store:
        store.check_claim(identity)
        refuse_wrong_site(store)  # never resumed: new chunks would be right and old ones wrong
        return len(store.chunks()) if store.provenance is not None else 0


def refuse_wrong_site(store: ActivationStore) -> None:
    """Raise (one line) when the database's activations come from a site the plain path read wrongly before the
    post-norm fix: resuming, explaining or scoring them would build on the wrong activations."""
    problem = cache_site_problem(store.provenance)
    if problem:
        raise StoreError(f"{store.path}: {problem}")


def check_cache_site(db_path: str | Path) -> None:
    """refuse_wrong_site for a database file, read-only; nothing when there is no file yet."""
    if Path(db_path).exists():
        with ActivationStore.open(db_path, readonly=True, allow_older=True) as store:
            refuse_wrong_site(store)
