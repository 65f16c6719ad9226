"""Annotate a cache for browsing: the vocabulary as text, and per latent its logit-lens tokens and nearest
latents by decoder direction (tables `vocab` and `directions`).

Computed in batches of latents on the decoder's device, so memory is [batch x vocab] and
[batch x latents] whatever the width; each batch is committed on its own, so a killed run resumes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autointerp.store.db import ActivationStore, StoreError
from autointerp.store.directions import missing_directions, vocab_size_stored, write_directions, write_vocab
from autointerp.store.filters import FilterSettings, filters_done
from autointerp.store.killpoints import kill_point

from .lens import LogitLens
from .neighbours import ANN_ABOVE, DecoderNeighbours

# Coder kinds whose decoder_directions() is None: their directions never fill, so a database made with
# one is not "missing" them (the batch would otherwise reload the model on every run to find that out).
NO_DIRECTIONS = frozenset({"neurons"})


@dataclass
class AnnotateResult:
    vocab_written: int  # token rows written (0: the vocabulary was already complete)
    latents_written: int  # directions rows written (0: every latent already had one)
    seconds: float
    neighbours: dict | None = None  # how the decoder neighbours were found (DecoderNeighbours.describe())

    def describe(self) -> str:
        if not (self.vocab_written or self.latents_written):
            return "nothing to annotate: already done"
        vocab = f", vocabulary of {self.vocab_written:,} tokens" if self.vocab_written else ""
        how = "" if self.neighbours is None or self.neighbours["exact"] else ", approximate: HNSW"
        return (
            f"annotated {self.latents_written:,} latents (logit lens, decoder neighbours{how}){vocab} "
            f"in {self.seconds:.1f} s"
        )


def vocab_text(tokenizer, size: int) -> list[str]:
    """Each id decoded alone; an id the tokenizer cannot decode (past its length) reads as ""."""
    ids = [[i] for i in range(size)]
    try:
        return tokenizer.batch_decode(ids, clean_up_tokenization_spaces=False)
    except Exception:  # tokenizers differ in what they raise for an unknown id: go one by one
        return [_decode_one(tokenizer, i) for i in range(size)]


def _decode_one(tokenizer, i: int) -> str:
    try:
        return tokenizer.decode([i], clean_up_tokenization_spaces=False)
    except Exception:
        return ""


def needs_annotation(store: ActivationStore) -> bool:
    """The cache lacks part of its vocabulary or a directions row its coder kind can have."""
    prov = store.provenance
    if prov is None:
        return False
    if vocab_size_stored(store.db) < int(prov["vocab_size"]):
        return True
    return prov["coder_kind"] not in NO_DIRECTIONS and bool(missing_directions(store.db, int(prov["num_latents"])))


def _pairs(values: torch.Tensor, indices: torch.Tensor) -> list[list[list]]:
    vals, idx = values.cpu().tolist(), indices.cpu().tolist()
    return [[[int(i), round(float(v), 4)] for i, v in zip(ri, rv)] for ri, rv in zip(idx, vals)]


def annotate(
    store: ActivationStore,
    model,
    coder,
    *,
    k: int = 10,
    n_neighbours: int = 10,
    batch: int = 512,
    on_event: Callable[[str, str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnnotateResult:
    """Fill what `store` lacks of `vocab` and `directions` from the loaded SubjectModel and SparseCoder."""
    t0 = time.perf_counter()
    prov = store.provenance
    if prov is None:
        raise StoreError(f"{store.path} holds no activation cache yet: run `autointerp cache` first")
    vocab_written = 0
    size = int(prov["vocab_size"])
    if vocab_size_stored(store.db) != size:
        write_vocab(store.db, vocab_text(model.tokenizer, size))
        vocab_written = size
        kill_point("cache.vocab")
    decoder = coder.decoder_directions()
    if decoder is None:
        if on_event is not None:
            on_event("warning", f"no logit lens or decoder neighbours: a {coder.kind} coder has no decoder directions")
        return AnnotateResult(vocab_written, 0, time.perf_counter() - t0)
    written, how = 0, None
    missing = missing_directions(store.db, int(prov["num_latents"]))
    if missing:  # the lens and the neighbours copy the decoder: only when a row is to be written
        device = decoder.device
        # Exact at or below ANN_ABOVE latents and on a GPU; above it on a CPU, an HNSW index (latents^2 otherwise).
        near = DecoderNeighbours(decoder, n_neighbours, device, approximate_above=ANN_ABOVE)
        how = near.describe()
        # The same float32 decoder (one copy at most), except for attn.hook_z, whose lens goes through W_O.
        lens = LogitLens.of_model(model, near.w, device, hook=str(prov["hook"]))
        written = annotate_directions(store, lens, near, k, batch, progress, missing)
    return AnnotateResult(vocab_written, written, time.perf_counter() - t0, how)


def annotate_directions(
    store: ActivationStore,
    lens: LogitLens,
    near: DecoderNeighbours,
    k: int = 10,
    batch: int = 512,
    progress: Callable[[int], None] | None = None,
    missing: list[int] | None = None,
) -> int:
    """Write the directions row (logit-lens extremes, decoder neighbours) of every latent that lacks one (those in
    `missing`, when the caller has listed them already), a batch of latents per transaction; returns how many
    were written. `progress(n)` hears each batch's size."""
    if missing is None:
        missing = missing_directions(store.db, int(store.provenance["num_latents"]))
    written = 0
    with torch.inference_mode():
        for start in range(0, len(missing), batch):
            ids = torch.tensor(missing[start : start + batch], device=near.w.device)
            top, bottom = lens.extremes(ids, k)
            nb = near.nearest(ids)
            rows = zip(ids.tolist(), _pairs(*top), _pairs(*bottom), _pairs(*nb))
            write_directions(
                store.db, [{"latent": i, "promoted": p, "suppressed": s, "neighbours": n} for i, p, s, n in rows]
            )
            written += len(ids)
            kill_point("cache.directions")
            if progress is not None:
                progress(len(ids))
    return written


def annotate_db(path: str, on_event: Callable[[str, str], None] | None = None) -> AnnotateResult:
    """`autointerp annotate DB`: load the model and coder the cache was made with, then annotate it.

    Everything is checked through a read-only connection first (the file, the cache it holds, the model and
    coder it was made with); only then is the file opened to write, which migrates an older schema. The cache's
    config comes from its provenance; the device is chosen afresh (the file may have been made on another
    machine). A cache whose chunks and statistics are complete is marked complete once annotated."""
    import dataclasses

    from autointerp.engine.config import CacheConfig
    from autointerp.store.stages import CACHE as CACHE_STAGE

    from .identity import check_identity
    from .setup import chunk_seqs_for, prepare, provenance

    with ActivationStore.open(path, readonly=True, allow_older=True) as store:
        prov = store.provenance
        if prov is None:
            raise StoreError(f"{path} holds no activation cache yet: run `autointerp cache` first")
        cfg = dataclasses.replace(CacheConfig(**json.loads(prov["config"])), device="auto")
    parts = prepare(cfg, precheck=lambda identity: check_identity(path, identity))
    check_identity(path, provenance(parts, cfg))  # the same model, hook, coder and corpus, or a one-line error
    with ActivationStore.open(path) as store:
        result = annotate(store, parts.model, parts.coder, on_event=on_event)
        per_chunk = chunk_seqs_for(cfg.seq_len, cfg.chunk_tokens)
        whole = len(store.chunks()) >= -(-cfg.n_sequences // per_chunk)
        done = store.stage_done(CACHE_STAGE, store.chunk_fingerprint())
        filtered = filters_done(store, FilterSettings.of(cfg), "positional")  # computed by the cache stage
        if whole and store.stats_done(cfg.window_len) and not needs_annotation(store) and filtered and not done:
            with store.db.conn:
                store.set_stage(CACHE_STAGE, store.chunk_fingerprint(), {"config": dataclasses.asdict(cfg)}, True)
        return result
