"""The latent filters over a cache: positional and unigram candidates from the store (store/filters.py), then
each unigram candidate verified through the subject model and coder.

Verification (the seeds' test of context independence): per token among the candidate's top tokens,
`unigram_trials_per_token` sentences of `unigram_context` tokens drawn uniformly from the vocabulary (special
tokens excepted) with that token put in at a uniformly drawn place, each read as the cache reads a sequence (the
start token first). `unigram_fire` is the share of those sentences in which the latent fires (is among the coder's
nonzero outputs) at the planted token; `unigram` = a candidate with unigram_fire >= unigram_min_fire_fraction.
The draw is seeded per latent, so a rerun writes the same numbers. Batches of latents commit on their own with the
stage's fingerprint ("cache.unigram"): a killed pass resumes with the candidates not yet verified.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from autointerp.store.db import ActivationStore
from autointerp.store.filters import UNIGRAM_STAGE, FilterSettings, compute_filters
from autointerp.store.killpoints import kill_point
from autointerp.store.unigram import restart_verification, unverified_candidates, write_verdicts

UNIGRAM_STREAM = 0x0171  # the random draw of a latent's scrambled sentences
ROWS_PER_FORWARD = 256  # sentences per forward pass
LATENTS_PER_COMMIT = 64


@dataclass
class FiltersResult:
    computed: int  # latents whose positional / candidate row was (re)computed
    verified: int  # unigram candidates verified through the model

    def describe(self) -> str:
        if not (self.computed or self.verified):
            return "filters: already computed for these settings"
        return f"filters: {self.computed:,} latents measured, {self.verified:,} unigram candidates verified"


def scrambled_sentences(
    latent: int, tokens: list[int], settings: FilterSettings, vocab: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The latent's sentences ([n, context + 1] token ids, without the start token) and where each planted token
    sits; `vocab`: the ids random tokens are drawn from."""
    rng = np.random.default_rng([UNIGRAM_STREAM, latent])
    planted = np.repeat(np.asarray(tokens, np.int64), settings.unigram_trials_per_token)
    width = settings.unigram_context + 1
    sentences = rng.choice(vocab, size=(len(planted), width))
    where = rng.integers(0, width, size=len(planted))
    sentences[np.arange(len(planted)), where] = planted
    return sentences, where


def random_vocab(model, vocab_size: int) -> np.ndarray:
    """Ids a scrambled sentence draws from: the tokenizer's ordinary tokens (no special ones)."""
    size = min(vocab_size, len(model.tokenizer))
    special = set(getattr(model.tokenizer, "all_special_ids", []) or []) | {model.start_id, model.sep_id}
    ids = np.arange(size, dtype=np.int64)
    return ids[~np.isin(ids, list(special))]


@torch.inference_mode()
def fired(model, coder, hook: str, via_bridge: bool, sentences: np.ndarray, where: np.ndarray, latents: np.ndarray):
    """Per sentence: whether its latent is nonzero at the planted place (sentences: [n, w] ids, no start token)."""
    out = np.zeros(len(sentences), bool)
    for s in range(0, len(sentences), ROWS_PER_FORWARD):
        rows = sentences[s : s + ROWS_PER_FORWARD]
        batch = torch.empty((len(rows), rows.shape[1] + 1), dtype=torch.int64)
        batch[:, 0] = model.start_id
        batch[:, 1:] = torch.from_numpy(rows)
        acts = model.hook_activations(batch, hook, via_bridge=via_bridge)[:, 1:]  # the start token is never scored
        n, w, d = acts.shape
        sparse = coder.encode(acts.reshape(-1, d).float())
        r = sparse.rows.cpu().numpy().astype(np.int64)
        hit = sparse.values.float().cpu().numpy() > 0
        keys = set((r[hit] * coder.num_latents + sparse.latents.cpu().numpy()[hit]).tolist())
        idx = np.arange(len(rows))
        want = (idx * w + where[s : s + len(rows)]) * coder.num_latents + latents[s : s + len(rows)]
        out[s : s + len(rows)] = [k in keys for k in want.tolist()]
    return out


def verify_unigrams(
    store: ActivationStore,
    model,
    coder,
    hook: str,
    settings: FilterSettings,
    via_bridge: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Verify every unigram candidate not verified yet for these settings; returns how many were."""
    fingerprint = settings.unigram_fingerprint(store)
    state = store.stage(UNIGRAM_STAGE)
    if state is not None and state["fingerprint"] == fingerprint and state["done_at"] is not None:
        return 0
    if state is None or state["fingerprint"] != fingerprint:  # other settings or another cache: start over
        restart_verification(store, fingerprint)
    todo = unverified_candidates(store)
    vocab = random_vocab(model, int(store.provenance["vocab_size"]))
    for start in range(0, len(todo), LATENTS_PER_COMMIT):
        part = todo[start : start + LATENTS_PER_COMMIT]
        sents, wheres, owners = [], [], []
        for latent, blob in part:
            s, w = scrambled_sentences(latent, [t for t, _ in json.loads(blob)], settings, vocab)
            sents.append(s)
            wheres.append(w)
            owners.append(np.full(len(s), latent, np.int64))
        owner = np.concatenate(owners)
        ok = fired(model, coder, hook, via_bridge, np.concatenate(sents), np.concatenate(wheres), owner)
        rows = []
        for latent, _ in part:
            share = float(ok[owner == latent].mean())
            rows.append((round(share, 6), int(share >= settings.unigram_min_fire_fraction), latent))
        last = start + len(part) == len(todo)
        write_verdicts(store, fingerprint, rows, last)
        kill_point("cache.unigram")
        if progress is not None:
            progress(len(part))
    if not todo:
        with store.db.conn:
            store.set_stage(UNIGRAM_STAGE, fingerprint, {}, True)
    return len(todo)


def run_filters(store: ActivationStore, model, coder, settings: FilterSettings, progress=None) -> FiltersResult:
    """Both passes: the store's (positional, candidates), then the model's (verification)."""
    computed = compute_filters(store, settings, progress=progress)
    via_bridge = store.provenance.get("forward") == "bridge"
    verified = verify_unigrams(store, model, coder, store.provenance["hook"], settings, via_bridge)
    return FiltersResult(computed, verified)


def filters_db(path: str, settings: FilterSettings | None = None) -> FiltersResult:
    """`autointerp filters DB`: load the model and coder the cache was made with and compute the filters (the
    settings: the cache's own unless given). Checked read-only first, as `annotate_db` is."""
    import dataclasses

    from autointerp.engine.config import CacheConfig
    from autointerp.store.db import StoreError

    from .identity import check_identity
    from .setup import prepare, provenance

    with ActivationStore.open(path, readonly=True, allow_older=True) as store:
        prov = store.provenance
        if prov is None:
            raise StoreError(f"{path} holds no activation cache yet: run `autointerp cache` first")
        cfg = dataclasses.replace(CacheConfig(**json.loads(prov["config"])), device="auto")
        if not store.stats_done(cfg.window_len):
            raise StoreError(f"{path}: the cache is not finished (its statistics are not complete); rerun the cache")
    parts = prepare(cfg, precheck=lambda identity: check_identity(path, identity))
    check_identity(path, provenance(parts, cfg))
    with ActivationStore.open(path) as store:
        return run_filters(store, parts.model, parts.coder, settings or FilterSettings.of(cfg))
