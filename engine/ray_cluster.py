"""The Ray cluster a `batch --ray` runs on: connecting to it, how many workers it holds, and how each worker is
placed (GPUs, CPUs, restarts). Ray schedules; nothing here decides where work runs beyond asking Ray for
resources. Used by the cache's shard workers (activations/shards.py) and the LLM replicas
(interpretation/llm/replicas.py); the batch process stays the database's only writer.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from autointerp.engine.config import ClusterConfig
from autointerp.store.errors import UserError
from autointerp.store.killpoints import ENV as KILL_ENV

log = logging.getLogger(__name__)

# What a worker tells the monitor about itself: RunLog.worker(name, role, **fields).
WorkerBoard = Callable[..., None]


# States a monitor must see at once; busy/idle and counts are sent at most every POST_EVERY_S per worker (each
# write also beats the run's heartbeat, which makes the TUI recount results).
URGENT_STATES = frozenset({"dead", "restarting", "unreachable", "done"})
POST_EVERY_S = 2.0


@dataclass
class ThrottledPost:
    """One worker's reports to the monitor: fields gathered between writes, written when urgent or due."""

    last: float = -1e9
    held: dict = field(default_factory=dict)

    def due(self, fields: dict) -> bool:
        self.held.update(fields)
        return fields.get("state") in URGENT_STATES or time.monotonic() - self.last >= POST_EVERY_S

    def take(self) -> dict:
        out, self.held, self.last = self.held, {}, time.monotonic()
        return out


def count_loss(worker, life: int, max_restarts: int) -> str:
    """A call was lost with its worker (any object with `deaths`, `dead`, `rerun`): calls lost together with one life
    count as one death (the first of them, sent while `deaths` was `life`); Ray restarts the worker `max_restarts`
    times, past which it is given up. Returns the worker's state for the monitor."""
    worker.rerun += 1
    if life == worker.deaths:
        worker.deaths += 1
    if worker.deaths > max_restarts:
        worker.dead = True
    return "dead" if worker.dead else "restarting"


class ClusterError(UserError):
    """A cluster that cannot be used (no ray, an unreachable head, every worker dead), in one line."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs the package ray: pip install 'autointerp[ray]'") from None
    return ray


@dataclass
class Cluster:
    """A connected cluster and its totals, as Ray reports them when the batch starts."""

    address: str
    cpus: float
    gpus: float
    nodes: int

    def worker_count(self, asked: int, cfg: ClusterConfig) -> int:
        """`asked`, or (0) as many workers as the cluster's GPUs (or CPUs) hold at the configured size each."""
        if asked:
            return asked
        if self.gpus >= cfg.worker_gpus:
            return max(1, int(self.gpus // cfg.worker_gpus))
        return max(1, int(self.cpus // cfg.worker_cpus))

    def actor_options(self, cfg: ClusterConfig) -> dict:
        """Where one worker runs (a GPU each when the cluster has them), and how Ray restarts it. Calls are never
        retried by Ray (max_task_retries 0): a call lost with its worker is re-sent by the driver, which counts
        it, to a live worker."""
        placement = {"num_gpus": cfg.worker_gpus} if self.gpus >= cfg.worker_gpus else {"num_cpus": cfg.worker_cpus}
        return {**placement, "max_restarts": cfg.max_restarts, "max_task_retries": 0}

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPUs" if self.gpus else ""
        return f"Ray cluster at {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs{gpus}"

    def close(self) -> None:
        ray = require_ray()
        if ray.is_initialized():
            ray.shutdown()


def connect(address: str) -> Cluster:
    """Join (or, for "local", start) the Ray cluster; refused in one line when ray is missing or the head cannot be
    reached. Kill points for crash tests (AUTOINTERP_KILL_AT naming a `cluster.` point) travel to the workers."""
    ray = require_ray()
    env = {}
    spec = os.environ.get(KILL_ENV, "")
    if spec.startswith("cluster."):
        env[KILL_ENV] = spec
    kwargs = {
        "include_dashboard": False,
        "ignore_reinit_error": True,  # a process that joined already (a benchmark) joins again
        "logging_level": logging.WARNING,
        "log_to_driver": False,  # workers log through our own events; Ray's echo would bury the progress lines
        "runtime_env": {"env_vars": env} if env else None,
    }
    _check_reachable(address)
    try:
        if address == "local":  # the cluster `ray start` made on this machine, else a new one here
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {first}") from None
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    cluster = Cluster(address, float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes)
    log.info("%s", cluster.describe())
    return cluster


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A head named HOST:PORT (or ray://HOST:PORT) that takes no TCP connection is refused now: ray.init itself
    retries such an address for many minutes, printing warnings, before it gives up."""
    if address in ("local", "auto"):
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT, auto or local")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r}: {e.strerror or e}") from None


def node_and_pid() -> dict:
    """Where the calling worker runs, for the monitor."""
    ray = require_ray()
    return {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}


def is_worker_loss(e: BaseException) -> bool:
    """A call that failed because its worker died or became unreachable (re-sent elsewhere), as opposed to an
    error the worker raised (a bug or bad input: it would fail again anywhere)."""
    ray = require_ray()
    return isinstance(e, (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError))


def first_line(e: BaseException) -> str:
    """An error as one short line (a worker's traceback can be pages)."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]
