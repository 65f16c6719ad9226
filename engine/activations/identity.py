"""Whether a database may take this cache: made from the same inputs (model, hook, coder, corpus), and not from a
site the plain path read wrongly before the post-norm fix. Read-only checks, run before anything is written."""

from __future__ import annotations

from pathlib import Path

from autointerp.store.db import ActivationStore, StoreError

from .model import site_may_have_moved
from .setup import cache_site_problem, recorded_model_type


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


def note_cache_site(store) -> str | None:
    """For a cache made before schema 11 whose site may have moved (an attention or MLP output read plainly): record
    its model family (read from the model's config, without weights) and, where the plain path read the hook from
    the wrong site, the line every reader shows (the TUI included, which reads no model). Returns that line."""
    prov = store.provenance
    if prov is None or not site_may_have_moved(prov) or prov.get("model_type") is not None:
        return cache_site_problem(prov)
    problem = cache_site_problem(prov)
    store.update_provenance(model_type=recorded_model_type(prov), forward_stale=problem)
    return problem
