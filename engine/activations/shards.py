"""The cache's forward passes on a Ray cluster: one shard worker (a Ray actor holding the model and coder) per GPU,
or per CPU worker, each encoding the chunks it is sent; the driver reads the corpus, deals chunks out, and commits
the results in chunk order through the same writer as a one-process cache, so the database is the same file.

A worker that dies loses only the chunks it held, uncommitted: they are re-sent to a live worker and counted. A
kill -9 of the driver loses nothing committed; the rerun resumes after the last committed chunk as a plain run does.
Memory on the driver: at most two chunks in flight per worker (their sequences, then their activations).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from autointerp.engine.config import CacheConfig, ClusterConfig
from autointerp.engine.ray_cluster import (
    Cluster,
    ClusterError,
    ThrottledPost,
    WorkerBoard,
    count_loss,
    first_line,
    is_worker_loss,
    node_and_pid,
    require_ray,
)
from autointerp.store.errors import RESUME
from autointerp.store.killpoints import kill_point

from .cache import ChunkEncoder, ChunkTask, EncodedChunk, encode_chunk
from .setup import load_parts

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2  # one encoding, one waiting: a worker never idles between chunks, memory stays bounded


class CacheShardWorker:
    """Runs inside a Ray worker process: loads the model and coder once, then encodes chunk after chunk."""

    def __init__(self, cfg: dict, device: str, name: str):
        self.name = name
        self.parts = load_parts(dataclasses.replace(CacheConfig(**cfg), device=device))

    def info(self) -> dict:
        return node_and_pid()

    def encode(self, seqs, batch_size: int, via_bridge: bool):
        kill_point(f"cluster.encode.{self.name}")  # crash tests: this worker dies mid-chunk
        t = time.perf_counter()
        offsets, latents, values, forward_s = encode_chunk(self.parts, seqs, batch_size, via_bridge)
        return offsets, latents, values, time.perf_counter() - t, forward_s


@dataclass
class ShardSlot:
    """The driver's view of one worker."""

    name: str
    actor: Any  # a Ray actor handle
    in_flight: int = 0
    done: int = 0
    deaths: int = 0  # lives lost (calls lost together with one life count once)
    rerun: int = 0  # chunks taken from it and re-sent elsewhere
    dead: bool = False
    tokens: int = 0
    busy_s: float = 0.0
    post: ThrottledPost = field(default_factory=ThrottledPost)


@dataclass
class Pending:
    task: ChunkTask
    ref: object
    slot: ShardSlot
    life: int = 0  # the worker's life (slot.deaths) when the call was sent
    result: tuple | None = None


@dataclass
class RayEncoder(ChunkEncoder):
    """Deals chunks to shard workers on the cluster and yields their results in chunk order."""

    cluster: Cluster
    cache_cfg: CacheConfig
    cfg: ClusterConfig
    board: WorkerBoard | None = None
    on_event: Callable[[str, str], None] | None = None  # the batch's event log
    slots: list[ShardSlot] = field(default_factory=list)
    chunks_rerun: int = 0

    def _say(self, kind: str, message: str) -> None:
        log.log(logging.WARNING if kind == "warning" else logging.INFO, "cache: %s", message)
        if self.on_event is not None:
            self.on_event(kind, message)

    def _post(self, slot: ShardSlot, **fields) -> None:
        if self.board is not None and slot.post.due(fields):
            self.board(slot.name, "cache", **slot.post.take())

    def _start(self) -> None:
        ray = require_ray()
        n = self.cluster.worker_count(self.cfg.cache_workers, self.cfg)
        remote = ray.remote(CacheShardWorker).options(**self.cluster.actor_options(self.cfg))
        cfg = dataclasses.asdict(self.cache_cfg)
        for i in range(n):
            name = f"cache-{i}"
            self.slots.append(ShardSlot(name, remote.remote(cfg, self.cluster.device, name)))
        infos = []
        for slot in self.slots:  # each loads its model; one that cannot is a problem of the cluster's nodes
            try:
                infos.append(ray.get(slot.actor.info.remote()))
            except Exception as e:  # noqa: BLE001 - whatever the worker raised, stated in one line
                raise ClusterError(f"cache worker {slot.name} could not start: {first_line(e)}") from None
        for slot, info in zip(self.slots, infos):
            self._post(slot, state="idle", done=0, **info)
        self._say("start", f"{n} cache workers on {self.cluster.describe()}")

    def _live(self) -> list[ShardSlot]:
        return [s for s in self.slots if not s.dead]

    def _submit(self, task: ChunkTask, via_bridge: bool, avoid: ShardSlot | None = None) -> Pending:
        live = self._live()
        if not live:
            raise ClusterError(f"every cache worker died; the chunks committed so far are kept: {RESUME}")
        choices = [s for s in live if s is not avoid] or live
        slot = min(choices, key=lambda s: (s.in_flight, s.name))
        slot.in_flight += 1
        ref = slot.actor.encode.remote(task.seqs, self.cache_cfg.batch_size, via_bridge)
        self._post(slot, state="busy", unit=f"chunk {task.chunk_id}")
        return Pending(task, ref, slot, slot.deaths)

    def _lost(self, entry: Pending, error: BaseException, via_bridge: bool) -> Pending:
        """The worker holding `entry` died: count it, give it up past its restarts, re-send the chunk."""
        slot = entry.slot
        slot.in_flight -= 1
        self.chunks_rerun += 1
        state = count_loss(slot, entry.life, self.cfg.max_restarts)
        self._post(slot, state=state, rerun=slot.rerun, error=first_line(error), unit=None)
        again = self._submit(entry.task, via_bridge, avoid=slot)
        self._say(
            "warning",
            f"cache worker {slot.name} lost chunk {entry.task.chunk_id} ({state}: {first_line(error)}); "
            f"re-sent to {again.slot.name}",
        )
        return again

    def map(self, tasks, via_bridge):
        ray = require_ray()
        if not self.slots:
            self._start()
        todo = iter(tasks)
        pending: deque[Pending] = deque()
        more = True
        try:
            while True:
                while more and len(pending) < IN_FLIGHT_PER_WORKER * max(1, len(self._live())):
                    task = next(todo, None)
                    if task is None:
                        more = False
                        break
                    pending.append(self._submit(task, via_bridge))
                if not pending:
                    break
                waiting = [p for p in pending if p.result is None]
                if waiting:
                    ready, _ = ray.wait([p.ref for p in waiting], num_returns=1)
                    ready_ids = set(ready)
                    for i, entry in enumerate(pending):
                        if entry.result is not None or entry.ref not in ready_ids:
                            continue
                        try:
                            entry.result = ray.get(entry.ref)
                        except Exception as e:
                            if not is_worker_loss(e):
                                raise ClusterError(
                                    f"cache worker {entry.slot.name} failed on chunk {entry.task.chunk_id}: "
                                    f"{first_line(e)}"
                                ) from None
                            pending[i] = self._lost(entry, e, via_bridge)
                            continue
                        self._finished(entry)
                while pending and pending[0].result is not None:  # commits stay in chunk order
                    entry = pending.popleft()
                    offsets, latents, values, seconds, forward_s = entry.result
                    yield entry.task, EncodedChunk(offsets, latents, values, seconds, forward_s)
        finally:
            self.close()

    def _finished(self, entry: Pending) -> None:
        slot = entry.slot
        slot.in_flight -= 1
        slot.done += 1
        seconds = entry.result[3]
        slot.tokens += sum(len(s) for s in entry.task.seqs)
        slot.busy_s += seconds
        self._post(
            slot,
            state="busy" if slot.in_flight else "idle",
            unit=f"chunk {entry.task.chunk_id}" if slot.in_flight else None,
            done=slot.done,
            rate=slot.tokens / max(slot.busy_s, 1e-9),
            rate_unit="tok/s",
            error=None,
        )

    def close(self) -> None:
        """Release the workers (their GPUs go to the LLM replicas next)."""
        if not self.slots:
            return
        ray = require_ray()
        for slot in self.slots:
            if not slot.dead:
                self._post(slot, state="done", unit=None)
            try:
                ray.kill(slot.actor)
            except Exception:  # noqa: BLE001 - an actor already gone is released
                pass
        if self.chunks_rerun:
            self._say("end", f"{self.chunks_rerun} chunk(s) re-run after their worker died")
        self.slots = []
