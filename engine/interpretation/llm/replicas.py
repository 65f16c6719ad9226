"""Explain and score spread over LLM replicas: model copies as Ray actors (llamacpp or vllm, one per GPU) or
OpenAI-compatible servers named by URL (a `vllm serve` per box). The pool is one `LLMBackend` to the Interpreter,
so nothing above it changes: each call (one latent's prompts, sent together) goes whole to one replica.

- Backpressure: a replica holds at most `in_flight` calls; the rest wait here, not in a replica's queue.
- Health: a replica whose worker dies (Ray) or that cannot be reached (URL) is set aside; the calls it held are
  re-sent to another replica and counted, never stored as outcomes. Ray restarts a dead actor up to
  `cluster.max_restarts` times; past that it is given up. With no replica left, calls come back `unavailable`, so
  the stage pauses, retries and at last stops cleanly like any outage (what is stored stays).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Sequence

from autointerp.engine.config import ClusterConfig, LLMConfig
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
from autointerp.store.killpoints import kill_point

from . import backend_class, make_backend
from .base import CURRENT_LATENT, LLMBackend, LLMRequest, LLMResponse

log = logging.getLogger(__name__)

UNREACHABLE_COOLDOWN_S = 30.0  # a URL replica that could not be reached is tried again after this long


class LLMReplicaActor:
    """Runs inside a Ray worker: one copy of the configured in-process backend (llamacpp or vllm) answering calls."""

    def __init__(self, llm_cfg: dict, name: str):
        self.name = name
        cfg = LLMConfig(**llm_cfg)
        if backend_class(cfg.backend).threads_from_config and cfg.n_threads == 0:
            # the CPUs Ray gave this replica, not the whole node's
            cpus = require_ray().get_runtime_context().get_assigned_resources().get("CPU")
            cfg.n_threads = max(1, int(cpus)) if cpus else 0
        self.backend = make_backend(cfg)

    def info(self) -> dict:
        return {
            **node_and_pid(),
            "on_cpu": self.backend.on_cpu,
            "json_output": self.backend.json_output,
            "model": self.backend.model,  # as resolved by the backend ("embedded:SmolLM2-..."), stored with results
            "describe": self.backend.describe(),
        }

    async def complete_many(self, requests: list[LLMRequest]) -> list[LLMResponse]:
        kill_point(f"cluster.llm.{self.name}")  # crash tests: this replica dies holding a latent's calls
        return await self.backend.complete_many(requests)


@dataclass
class Replica:
    name: str
    call: Callable[[list[LLMRequest]], Awaitable[list[LLMResponse]]]
    limit: int  # calls held at once
    backend: LLMBackend | None = None  # a URL replica's client (closed with the pool)
    actor: object = None
    in_flight: int = 0
    done: int = 0
    deaths: int = 0
    dead: bool = False
    rerun: int = 0  # calls taken from it and re-sent to another replica
    resting_until: float = 0.0  # a URL replica that could not be reached waits out this moment
    started: float = dataclasses.field(default_factory=time.monotonic)
    post: ThrottledPost = dataclasses.field(default_factory=ThrottledPost)

    def usable(self, now: float) -> bool:
        return not self.dead and now >= self.resting_until


class ReplicaPool(LLMBackend):
    """Many replicas as one backend (see the module's text)."""

    def __init__(
        self,
        llm_cfg: LLMConfig,
        replicas: list[Replica],
        max_restarts: int,
        board: WorkerBoard | None = None,
        on_event: Callable[[str, str], None] | None = None,
        model: str | None = None,
        replica_describe: dict | None = None,
        *,
        on_cpu: bool = False,
        json_output: bool = True,
    ):
        self.name, self.model = llm_cfg.backend, model or llm_cfg.model
        self.replica_describe = replica_describe or {}  # what one replica records (its threads, context, ...)
        self.replicas, self.max_restarts = replicas, max_restarts
        self.board, self.on_event = board, on_event
        self.on_cpu, self.json_output = on_cpu, json_output  # as one replica has them
        self.parallel_latents = sum(r.limit for r in replicas)  # latents the stage keeps in flight
        self.calls_rerun = 0
        self._changed: asyncio.Condition | None = None  # made on the stage's loop

    def _say(self, kind: str, message: str) -> None:
        log.log(logging.WARNING if kind == "warning" else logging.INFO, "llm: %s", message)
        if self.on_event is not None:
            self.on_event(kind, message)

    def _post(self, r: Replica, **fields) -> None:
        if self.board is not None and r.post.due(fields):
            self.board(r.name, "llm", **r.post.take())

    def describe(self) -> dict:
        # One replica's own description: results read as a one-process run's do (the replicas are in the run's
        # config and the `workers` table).
        return {**self.replica_describe, "backend": self.name, "model": self.model}

    async def _acquire(self) -> Replica | None:
        """The least loaded usable replica with room, waiting while all are full; None when none is alive."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while True:
                now = time.monotonic()
                alive = [r for r in self.replicas if not r.dead]
                if not alive:
                    return None
                usable = [r for r in alive if r.usable(now)]
                if not usable:  # every live one is resting after a failed reach: the soonest back is tried
                    usable = [min(alive, key=lambda r: r.resting_until)]
                room = [r for r in usable if r.in_flight < r.limit]
                if room:
                    r = min(room, key=lambda r: (r.in_flight / r.limit, r.name))
                    r.in_flight += 1
                    return r
                await self._changed.wait()

    async def _release(self, r: Replica) -> None:
        r.in_flight -= 1
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def complete_many(self, requests: Sequence[LLMRequest]) -> list[LLMResponse]:
        requests = list(requests)
        latent = CURRENT_LATENT.get()
        what = f"latent {latent}" if latent is not None else f"{len(requests)} calls"
        while True:
            r = await self._acquire()
            if r is None:
                return [LLMResponse(error="no LLM replica is alive", unavailable=True) for _ in requests]
            life = r.deaths
            self._post(r, state="busy", unit=what)
            try:
                out = await r.call(requests)
            except Exception as e:  # noqa: BLE001 - a lost worker is re-sent; anything else is these calls' failure
                if not is_worker_loss(e):
                    why = first_line(e)
                    log.warning("llm replica %s failed on %s: %s", r.name, what, why)
                    return [LLMResponse(error=f"replica {r.name}: {why}") for _ in requests]
                self._lost(r, life, what, e)
                continue
            finally:
                await self._release(r)
            if out and all(x.unavailable for x in out) and any(o.usable(time.monotonic()) for o in self._others(r)):
                # A URL replica that cannot be reached: rest it, and send these calls to another one.
                r.resting_until = time.monotonic() + UNREACHABLE_COOLDOWN_S
                r.rerun += 1
                self.calls_rerun += 1
                self._post(r, state="unreachable", rerun=r.rerun, error=out[0].error, unit=None)
                self._say("warning", f"llm replica {r.name} unreachable ({out[0].error}); {what} re-sent")
                continue
            r.done += 1
            minutes = max(time.monotonic() - r.started, 1e-9) / 60
            self._post(
                r,
                state="busy" if r.in_flight else "idle",
                unit=what if r.in_flight else None,
                done=r.done,
                rate=r.done / minutes,
                rate_unit="calls/min",
                error=None,
            )
            return out

    def _others(self, r: Replica) -> list[Replica]:
        return [o for o in self.replicas if o is not r and not o.dead]

    def _lost(self, r: Replica, life: int, what: str, error: BaseException) -> None:
        self.calls_rerun += 1
        state = count_loss(r, life, self.max_restarts)
        self._post(r, state=state, rerun=r.rerun, error=first_line(error), unit=None)
        self._say("warning", f"llm replica {r.name} lost {what} ({state}: {first_line(error)}); re-sent")

    def silent_s(self) -> float:
        clients = [r.backend for r in self.replicas if r.backend is not None and not r.dead]
        return min((b.silent_s() for b in clients), default=0.0)

    async def aclose(self) -> None:
        for r in self.replicas:
            if r.backend is not None:
                await r.backend.aclose()
            if not r.dead:
                self._post(r, state="done", unit=None)
        actors = [r.actor for r in self.replicas if r.actor is not None]
        if actors:
            ray = require_ray()
            for a in actors:
                try:
                    ray.kill(a)
                except Exception:  # noqa: BLE001 - an actor already gone is released
                    pass
        if self.calls_rerun:
            self._say("end", f"{self.calls_rerun} latent call(s) re-sent after their replica was lost")


def make_replica_pool(
    cluster: Cluster,
    llm_cfg: LLMConfig,
    cfg: ClusterConfig,
    board: WorkerBoard | None = None,
    on_event: Callable[[str, str], None] | None = None,
) -> ReplicaPool:
    """The replicas a `batch --ray` explains and scores with: each base URL (openai), or model copies started as
    Ray actors (llamacpp, vllm), each checked to have started before any latent is sent."""
    kind = backend_class(llm_cfg.backend)
    kind.check_config(llm_cfg)
    if not kind.in_process:  # a server per URL
        clients = [kind(dataclasses.replace(llm_cfg, base_urls=[url])) for url in llm_cfg.base_urls]
        replicas = [
            Replica(url, c.complete_many, max(1, llm_cfg.max_concurrency), backend=c)
            for url, c in zip(llm_cfg.base_urls, clients)
        ]
        first = clients[0]
        pool = ReplicaPool(
            llm_cfg,
            replicas,
            cfg.max_restarts,
            board,
            on_event,
            model=first.model,
            replica_describe=first.describe(),
            json_output=first.json_output,
        )
        for r in replicas:
            pool._post(r, state="idle", node=r.name, done=0)
        return pool
    ray = require_ray()
    n = cluster.worker_count(cfg.llm_replicas, cfg)
    remote = ray.remote(LLMReplicaActor).options(**cluster.actor_options(cfg))
    actors = [remote.remote(dataclasses.asdict(llm_cfg), f"llm-{i}") for i in range(n)]
    infos = []
    for i, actor in enumerate(actors):
        try:
            infos.append(ray.get(actor.info.remote()))
        except Exception as e:  # noqa: BLE001 - whatever the replica raised, stated in one line
            for a in actors:
                ray.kill(a)
            raise ClusterError(f"LLM replica llm-{i} could not start: {first_line(e)}") from None
    replicas = [
        Replica(f"llm-{i}", _actor_call(actor), cfg.replica_in_flight, actor=actor) for i, actor in enumerate(actors)
    ]
    pool = ReplicaPool(
        llm_cfg,
        replicas,
        cfg.max_restarts,
        board,
        on_event,
        infos[0]["model"],
        infos[0]["describe"],
        on_cpu=infos[0]["on_cpu"],
        json_output=infos[0]["json_output"],
    )
    for r, info in zip(replicas, infos):
        pool._post(r, state="idle", done=0, node=info["node"], pid=info["pid"])
    pool._say("start", f"{n} LLM replicas ({llm_cfg.backend}) on {cluster.describe()}")
    return pool


def _actor_call(actor) -> Callable[[list[LLMRequest]], Awaitable[list[LLMResponse]]]:
    async def call(requests: list[LLMRequest]) -> list[LLMResponse]:
        return await actor.complete_many.remote(requests)

    return call
