"""The streaming activation cache: tokens -> model -> coder -> latent-major chunks in SQLite.

Memory is bounded by one chunk (at most 65,536 tokens of top-k activations) plus one chunk in
flight to the writer thread, whatever the number of tokens. A chunk is committed in one
transaction with its sequences, so a killed run resumes after its last committed chunk with
nothing duplicated or lost.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from autointerp.engine.config import CacheConfig
from autointerp.store.db import ActivationStore, ChunkInfo, StoreError
from autointerp.store.filters import FilterSettings, compute_filters, filters_done
from autointerp.store.killpoints import kill_point
from autointerp.store.onepass import compact_in_one_pass
from autointerp.store.stages import CACHE
from autointerp.store.stats import compute_latent_stats

from .annotate import annotate
from .corpus import CorpusError, CorpusPosition, CorpusSpec, SequencePacker, iter_documents
from .filters import FiltersResult
from .identity import check_identity
from .setup import CacheParts, chunk_seqs_for, prepare, provenance

if TYPE_CHECKING:
    from .reconstruction import ReconstructionCheck

log = logging.getLogger(__name__)


@dataclass
class CacheResult:
    chunks_total: int
    chunks_done_before: int
    tokens: int
    nnz: int
    seconds: float
    forward_seconds: float
    corpus_exhausted: bool = False  # the corpus ran out before n_tokens
    write_seconds: float = 0.0  # inside write_chunk (packing + commit), on the writer thread
    written: int = 0  # activations this run wrote

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def sequence_stream(parts: CacheParts, cfg: CacheConfig) -> Iterator[np.ndarray]:
    return iter(sequence_source(parts, cfg)[1])


def sequence_source(
    parts: CacheParts, cfg: CacheConfig, start: CorpusPosition | None = None, skip: int = 0
) -> tuple[SequencePacker, Iterator[np.ndarray]]:
    """The packer (which says where it stands) and the cache's sequences from it: `cfg.n_sequences` in all, of
    which the first `skip` are already committed and `start` is where the reader stood after them."""
    spec = CorpusSpec.of(cfg)
    m = parts.model
    packer = SequencePacker(iter_documents(spec), m.tokenizer, cfg.seq_len, m.start_id, m.sep_id, start=start)
    return packer, itertools.islice(packer, cfg.n_sequences - skip)


CACHE_STAGE = CACHE

# Cache settings that say how it was computed, not what: a cache made with another batch size is the same cache.
HOW_NOT_WHAT = frozenset({"batch_size", "device", "dtype", "check_reconstruction"})


def same_settings(done_with: dict, cfg: CacheConfig) -> bool:
    return all(done_with.get(k) == v for k, v in asdict(cfg).items() if k not in HOW_NOT_WHAT)


def cache_is_complete(store: ActivationStore, cfg: CacheConfig) -> bool:
    """The cache stage ended for these settings over exactly the chunks the file holds (its explicit mark,
    written last: chunks, statistics, vocabulary and directions all done), and the store's part of its filters is
    computed for these settings (a file from before them, or new filter settings, reruns only the filters)."""
    if store.provenance is None:
        return False
    mark = store.stage(CACHE_STAGE)
    return (
        mark is not None
        and mark["done_at"] is not None
        and mark["fingerprint"] == store.chunk_fingerprint()
        and same_settings(mark["detail"].get("config", {}), cfg)
        and filters_done(store, FilterSettings.of(cfg), "positional")
    )


class ChunkWriter:
    """Commits chunks on a background thread so SQLite work overlaps the next forward passes."""

    def __init__(self, store: ActivationStore):
        self.store = store
        self.q: queue.Queue = queue.Queue(maxsize=1)  # one chunk in flight bounds memory
        self.error: BaseException | None = None
        self.seconds, self.written = 0.0, 0  # the write path's own time and activations: its throughput
        self.thread = threading.Thread(target=self._run, name="chunk-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is None:
                try:
                    t = time.perf_counter()
                    self.store.write_chunk(*item)
                    took = time.perf_counter() - t
                    self.seconds += took
                    self.written += item[0].nnz
                    log.debug("chunk %d committed in %.2fs", item[0].id, took)
                    kill_point("cache.chunk")
                except BaseException as e:  # surfaced to the caller on the next submit/close
                    self.error = e

    def submit(self, *item) -> None:
        if self.error:
            raise self.error
        self.q.put(item)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error:
            raise self.error


def encode_batch(
    parts: CacheParts, tokens: torch.Tensor, via_bridge: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations of one batch as flat (row-major token index, latent, value) arrays.

    Position 0 of every sequence (the start token) is skipped: it is never an activation. `via_bridge`: through
    TransformerLens's forward (a cache begun that way resumes that way; see provenance "forward").
    """
    acts = parts.model.hook_activations(tokens, parts.hook, via_bridge=via_bridge)  # [B, T, d]
    B, T, d = acts.shape
    x = acts[:, 1:, :].reshape(-1, d).float()
    sp = parts.coder.encode(x)
    rows = sp.rows.cpu().numpy()
    b, t = np.divmod(rows, T - 1)
    flat = b * T + t + 1
    # Compact right away (int32 / float16): a chunk's buffer is then 10 bytes per activation.
    return flat.astype(np.int32), sp.latents.cpu().numpy().astype(np.int32), sp.values.cpu().numpy().astype(np.float16)


def encode_chunk(
    parts: CacheParts, seqs: list[np.ndarray], batch_size: int, via_bridge: bool = False, on_batch=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One chunk's sparse activations: (uint16 offsets into the chunk, latents, values, seconds in forward
    passes). The same function runs here and on a cluster's workers, so both give the same rows."""
    seq_len = len(seqs[0])
    flat_parts, lat_parts, val_parts = [], [], []
    forward_s = 0.0
    for start in range(0, len(seqs), batch_size):
        batch = torch.from_numpy(np.stack(seqs[start : start + batch_size]))
        tf = time.perf_counter()
        with torch.inference_mode():
            flat, lat, val = encode_batch(parts, batch, via_bridge)
        forward_s += time.perf_counter() - tf
        flat += start * seq_len
        flat_parts.append(flat)
        lat_parts.append(lat)
        val_parts.append(val)
        if on_batch is not None:
            on_batch(len(batch))
    offsets = np.concatenate(flat_parts).astype(np.uint16)
    return offsets, np.concatenate(lat_parts), np.concatenate(val_parts), forward_s


@dataclass
class ChunkTask:
    """One chunk to encode: its sequences, and where the corpus reader stood after them (kept with the chunk so
    that a resumed cache starts reading there)."""

    chunk_id: int
    seqs: list[np.ndarray]
    position: CorpusPosition | None


@dataclass
class EncodedChunk:
    offsets: np.ndarray
    latents: np.ndarray
    values: np.ndarray
    seconds: float  # the chunk's wall time where it was encoded
    forward_s: float
    report: bool = True  # False: progress was already reported batch by batch (LocalEncoder)


class ChunkTasks:
    """The chunks still to encode, in order, read from the corpus stream; chunks an earlier run committed are read
    past (their sequence count checked against the corpus). `n_read` counts every sequence read."""

    def __init__(self, stream, packer, first_chunk: int, total_chunks: int, per_chunk: int, done: dict):
        self.stream, self.packer = stream, packer
        self.first_chunk, self.total_chunks, self.per_chunk, self.done = first_chunk, total_chunks, per_chunk, done
        self.n_read = sum(done[c].n_seqs for c in range(first_chunk))

    def __iter__(self) -> Iterator[ChunkTask]:
        for chunk_id in range(self.first_chunk, self.total_chunks):
            seqs = list(itertools.islice(self.stream, self.per_chunk))
            self.n_read += len(seqs)
            if not seqs:
                return
            if chunk_id in self.done:
                if self.done[chunk_id].n_seqs != len(seqs):
                    raise StoreError(
                        f"committed chunk {chunk_id} holds {self.done[chunk_id].n_seqs} sequences, "
                        f"the corpus now gives {len(seqs)}: the corpus changed"
                    )
                log.debug("chunk %d: committed by an earlier run, its sequences skipped", chunk_id)
                continue
            yield ChunkTask(chunk_id, seqs, self.packer.position() if self.packer is not None else None)


class ChunkEncoder:
    """Turns chunk tasks into encoded chunks, yielded in chunk order (the writer commits them in that order)."""

    def map(self, tasks: Iterator[ChunkTask], via_bridge: bool) -> Iterator[tuple[ChunkTask, EncodedChunk]]:
        """`via_bridge`: the forward the cache began with (provenance "forward"), known once the file is open."""
        raise NotImplementedError


class LocalEncoder(ChunkEncoder):
    """Forward passes in this process, one chunk at a time; progress is reported batch by batch."""

    def __init__(self, parts: CacheParts, cfg: CacheConfig, on_batch=None):
        self.parts, self.cfg, self.on_batch = parts, cfg, on_batch

    def map(self, tasks, via_bridge):
        for task in tasks:
            tc = time.perf_counter()
            offsets, latents, values, forward_s = encode_chunk(
                self.parts, task.seqs, self.cfg.batch_size, via_bridge, self.on_batch
            )
            # Progress was reported batch by batch (on_batch): the chunk is not counted again.
            yield task, EncodedChunk(offsets, latents, values, time.perf_counter() - tc, forward_s, report=False)


@dataclass
class CacheInputs:
    """A cache's inputs, checked: its provenance, and the corpus stream already read up to its first sequence
    (None when every chunk is committed and the corpus need not be read)."""

    parts: CacheParts
    provenance: dict
    stream: Iterator[np.ndarray] | None
    packer: SequencePacker | None = None  # where the stream stands in the corpus, recorded with each chunk
    first_chunk: int = 0  # the stream starts at this chunk (the ones before are committed and were skipped)
    committed: int = 0  # chunks the database already held
    reconstruction: ReconstructionCheck | None = None  # the first batch's, when `check_first_batch` ran it


def check_cache_inputs(cfg: CacheConfig, db_path: str | Path, parts: CacheParts | None = None) -> CacheInputs:
    """Everything a cache run needs, checked before the database is written: the model, hook, coder and corpus,
    and that the database (if any) holds a cache of the same identity. Writes nothing."""
    t0 = time.perf_counter()
    parts = parts or prepare(cfg, precheck=lambda identity: check_identity(db_path, identity))
    prov = provenance(parts, cfg)
    committed = check_identity(db_path, prov)
    per_chunk = chunk_seqs_for(cfg.seq_len, cfg.chunk_tokens)
    total_chunks = -(-cfg.n_sequences // per_chunk)
    log.info(
        "cache: model, coder and corpus checked in %.1fs; %d of %d chunks committed in %s",
        time.perf_counter() - t0,
        committed,
        total_chunks,
        db_path,
    )
    stream, packer, first_chunk = None, None, 0
    if committed < total_chunks:
        start, skip = None, 0
        point = resume_point(db_path) if committed else None
        if point is not None:
            first_chunk, next_doc, carry = point
            start, skip = CorpusPosition(next_doc, carry), first_chunk * per_chunk
            log.info("cache: the corpus picks up at document %d (%d tokens carried)", next_doc, len(carry))
        packer, stream = sequence_source(parts, cfg, start, skip)
        # Read the first sequence before touching the database: an empty, undecodable, malformed or too short
        # corpus fails here with the file left as it was.
        first = next(stream, None)
        if first is None:
            raise CorpusError(
                f"the corpus holds fewer tokens than one sequence (seq_len = {cfg.seq_len}); "
                "use a bigger corpus or a smaller seq_len"
            )
        stream = itertools.chain([first], stream)
    return CacheInputs(parts, prov, stream, packer, first_chunk, committed)


def check_first_batch(inputs: CacheInputs, cfg: CacheConfig) -> None:
    """The reconstruction check (engine/activations/reconstruction.py) on the cache's first batch, at most
    CACHE_CHECK_TOKENS of it, before the database is written: an unusable reconstruction (a wrong hook, a missing
    input normalisation, the wrong model) raises ReconstructionError, nothing written. The commands (`cache`,
    `batch`) call it after `check_cache_inputs`; `run_cache` itself does not (a library caller, or a test with a
    planted coder, decides). Skipped with cfg.check_reconstruction false, and for a cache that already holds chunks
    (its first run decided). The sequences read are put back in front of the stream."""
    from .reconstruction import CACHE_CHECK_TOKENS, ReconstructionError, measure_reconstruction

    if not cfg.check_reconstruction or inputs.stream is None or inputs.committed:
        return
    # No more than one chunk's sequences: the packer then stands where the first chunk records it stands.
    n = max(
        1, min(cfg.batch_size, -(-CACHE_CHECK_TOKENS // cfg.seq_len), chunk_seqs_for(cfg.seq_len, cfg.chunk_tokens))
    )
    head = list(itertools.islice(inputs.stream, n))
    inputs.stream = itertools.chain(head, inputs.stream)
    result = measure_reconstruction(inputs.parts, head, cfg.batch_size)
    inputs.reconstruction = result
    log.info("cache: reconstruction check in %.1fs: %s, %s", result.seconds, result.figures(), result.verdict)
    if result.unusable:
        raise ReconstructionError(result.error_line())


# How often the passes after the forward (statistics, annotation) say how far they are: each event is also the
# run's heartbeat, which a monitor takes for a killed run after STALE_HEARTBEAT_S (60 s) of silence.
FINALISE_EVENT_S = 10.0


def finalise_ticker(event, step: str, total: int) -> Callable[[int], None]:
    """A progress callback for a pass over `total` latents: adds up what it hears, and emits a `progress` event
    at most every FINALISE_EVENT_S and once at the end."""
    state = {"done": 0, "last": time.monotonic()}

    def tick(n: int) -> None:
        state["done"] += n
        now = time.monotonic()
        if state["done"] >= total or now - state["last"] >= FINALISE_EVENT_S:
            state["last"] = now
            event("progress", f"{step}: {state['done']:,}/{total:,} latents")

    return tick


def run_cache(
    cfg: CacheConfig,
    db_path: str,
    on_progress: Callable[[int, int], None] | None = None,
    parts: CacheParts | None = None,
    on_event: Callable[[str, str], None] | None = None,
    inputs: CacheInputs | None = None,
    encoder: ChunkEncoder | None = None,
) -> CacheResult:
    """Cache activations of `cfg` into `db_path`, resuming after the last committed chunk.

    Everything is validated (`check_cache_inputs`, unless the caller did) before the database is written, so bad
    input leaves it untouched. `on_progress(tokens_done, tokens_total)` is called per batch; events (start,
    warning, end) go to `on_event(kind, message)` when given (a caller with its own event log), else to the
    store. The stage ends by marking itself complete in the file (`cache_is_complete`). `encoder` runs the forward
    passes (default: here, `LocalEncoder`; on a Ray cluster: `RayEncoder` in shards.py); this process stays
    the database's only writer either way."""
    inputs = inputs or check_cache_inputs(cfg, db_path, parts)
    store = ActivationStore.open(db_path, create=True)
    try:
        store.claim(inputs.provenance)
        return _fill(cfg, inputs, store, on_progress, on_event, encoder)
    finally:
        store.close()


def resume_point(db_path: str | Path) -> tuple[int, int, np.ndarray] | None:
    with ActivationStore.open(db_path, readonly=True, allow_older=True) as store:
        return store.resume_point()


def _fill(cfg, inputs: CacheInputs, store: ActivationStore, on_progress, on_event=None, encoder=None) -> CacheResult:
    parts, stream, packer = inputs.parts, inputs.stream, inputs.packer

    def event(kind: str, message: str, data: dict | None = None) -> None:
        if on_event is not None:
            on_event(kind, message)
        else:
            store.log_event("cache", kind, message, data)

    seq_len = cfg.seq_len
    per_chunk = chunk_seqs_for(seq_len, cfg.chunk_tokens)
    n_seqs = cfg.n_sequences
    total_chunks = -(-n_seqs // per_chunk)
    done = store.chunks()
    tokens_total = n_seqs * seq_len
    tokens_seen = sum(c.n_seqs for c in done.values()) * seq_len
    event("start", f"caching {tokens_total} tokens into {total_chunks} chunks", {"chunks_done": len(done)})
    check = inputs.reconstruction
    if check is not None:
        event("check", f"reconstruction {check.verdict}: {check.figures()}", check.to_json())
    if done:
        log.info(
            "cache: resuming, %d of %d chunks already committed%s",
            len(done),
            total_chunks,
            "" if stream is not None else " (all of them: statistics and annotation only)",
        )
    t0 = time.perf_counter()
    forward_s = 0.0
    new_tokens = 0
    n_read = sum(c.n_seqs for c in done.values())
    write_s, written = 0.0, 0
    via_bridge = store.provenance.get("forward") == "bridge"  # the forward this cache began with
    if stream is not None:
        writer = ChunkWriter(store)
        todo = ChunkTasks(stream, packer, inputs.first_chunk, total_chunks, per_chunk, done)
        seen = [tokens_seen]  # tokens encoded so far, committed or not: the progress bar's count

        def advance(n_seqs: int) -> None:
            seen[0] += n_seqs * seq_len
            if on_progress:
                on_progress(seen[0], tokens_total)

        if encoder is None:
            encoder = LocalEncoder(parts, cfg, on_batch=advance)
        try:
            for task, enc in encoder.map(todo, via_bridge):
                forward_s += enc.forward_s
                new_tokens += len(task.seqs) * seq_len
                if enc.report:
                    advance(len(task.seqs))
                info = ChunkInfo(
                    task.chunk_id,
                    task.chunk_id * per_chunk,
                    len(task.seqs),
                    len(task.seqs) * (seq_len - 1),
                    len(enc.values),
                )
                log.debug(
                    "chunk %d of %d: %d sequences, %d activations in %.2fs",
                    task.chunk_id + 1,
                    total_chunks,
                    len(task.seqs),
                    len(enc.values),
                    enc.seconds,
                )
                at = task.position
                writer.submit(
                    info,
                    task.seqs,
                    enc.latents,
                    enc.offsets,
                    enc.values,
                    enc.seconds,
                    None if at is None else at.next_doc,
                    None if at is None else at.carry,
                )
            writer.close()
        except BaseException:
            writer.close()
            raise
        n_read = todo.n_read
        write_s, written = writer.seconds, writer.written
    elif on_progress:
        on_progress(tokens_seen, tokens_total)
    seconds = time.perf_counter() - t0
    exhausted = n_read < n_seqs
    if exhausted:
        event("warning", f"the corpus ran out after {n_read * seq_len} of {tokens_total} tokens")
    log.info(
        "cache: %d new tokens in %.1fs (%.1fs in forward passes); latent statistics next",
        new_tokens,
        seconds,
        forward_s,
    )
    t = time.perf_counter()
    num_latents = int(store.provenance["num_latents"])
    settings = FilterSettings.of(cfg)
    in_pass = 0  # latents whose filter rows the compaction pass wrote
    if store.n_staged() or not (store.stats_done(cfg.window_len) and filters_done(store, settings, "positional")):
        # One pass: compaction computes the statistics, the filters' store part and the co-activation sketches
        # from the activations it holds (store/onepass.py); the passes below then find them done.
        one = compact_in_one_pass(
            store, cfg.window_len, settings, progress=finalise_ticker(event, "compaction and statistics", num_latents)
        )
        log.info(
            "cache: %d activations compacted, statistics of %d latents, filters of %d, sketches of %d, in %.1fs",
            one.moved,
            one.stats,
            one.filters,
            one.sketches,
            time.perf_counter() - t,
        )
        in_pass = one.filters
        t = time.perf_counter()
    compute_latent_stats(store, cfg.window_len, progress=finalise_ticker(event, "statistics", num_latents))
    log.info("cache: latent statistics in %.1fs", time.perf_counter() - t)
    # Token text and what each decoder direction says, for readers without a model (the TUI).
    annotated = annotate(
        store, parts.model, parts.coder, on_event=event, progress=finalise_ticker(event, "annotation", num_latents)
    )
    event(
        "annotate",
        annotated.describe(),
        {"seconds": annotated.seconds, "latents": annotated.latents_written, "neighbours": annotated.neighbours},
    )
    log.info("cache: annotation in %.1fs", annotated.seconds)
    # The store's part of the filters only (positional MI, unigram candidates): verifying the candidates through
    # the model costs ~40 short sentences per candidate token (150 s for a cache that took 8 s on a CPU), so it
    # runs when asked for, by `autointerp filters DB`.
    t = time.perf_counter()
    computed = compute_filters(store, settings, progress=finalise_ticker(event, "filters", num_latents))
    filtered = FiltersResult(computed + in_pass, 0)
    event("filters", filtered.describe(), {"computed": filtered.computed, "verified": filtered.verified})
    log.info("cache: %s in %.1fs", filtered.describe(), time.perf_counter() - t)
    kill_point("cache.mark")
    with store.db.conn:  # the stage's explicit end, over exactly the chunks now committed
        store.set_stage(CACHE_STAGE, store.chunk_fingerprint(), {"config": asdict(cfg), "exhausted": exhausted}, True)
    event(
        "end",
        f"cached {store.n_tokens()} tokens, {store.nnz()} activations",
        {"seconds": seconds, "new_tokens": new_tokens},
    )
    return CacheResult(
        total_chunks, len(done), new_tokens, store.nnz(), seconds, forward_s, exhausted, write_s, written
    )
