"""The unigram candidates' verification through the subject model (engine/activations/filters.py): what is left to
verify, and each verdict written with the stage row that says how far the pass got, in one transaction."""

from __future__ import annotations

from .db import ActivationStore
from .stages import CACHE_UNIGRAM


def restart_verification(store: ActivationStore, fingerprint: str) -> None:
    """Forget every verdict (other settings or another cache) and start the stage over for `fingerprint`."""
    with store.db.conn:
        store.db.execute("update latent_filters set unigram_fire = null, unigram = null where unigram_candidate")
        store.set_stage(CACHE_UNIGRAM, fingerprint, {}, False)


def unverified_candidates(store: ActivationStore) -> list[tuple[int, str]]:
    """(latent, its unigram tokens as JSON) of every candidate without a verdict, in latent order."""
    return store.db.execute(
        "select latent, unigram_tokens from latent_filters where unigram_candidate and unigram_fire is null"
        " order by latent"
    ).fetchall()


def write_verdicts(store: ActivationStore, fingerprint: str, rows: list[tuple[float, int, int]], last: bool) -> None:
    """Record (share that fired, is a unigram latent, latent) verdicts and the stage's progress (done with `last`)."""
    with store.db.conn:
        store.db.conn.executemany("update latent_filters set unigram_fire = ?, unigram = ? where latent = ?", rows)
        store.set_stage(CACHE_UNIGRAM, fingerprint, {}, last)
