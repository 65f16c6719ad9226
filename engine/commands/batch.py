"""`autointerp batch`: cache -> explain -> score for a selection of latents, resumable at any moment. `autointerp
cache`, `explain` and `score` are runs of one of its stages (`run_one_stage`).

Every unit of work is committed in its own transaction (a cache chunk, one latent's explanation, one
latent's scores), and each stage skips what is committed, so a killed run rerun with the same command
ends with the same database as an uninterrupted one. Progress goes to the terminal (rich) and, throttled,
to the database (`runs`, `progress`, `events`) for monitors in other processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from autointerp.engine.config import Config, ConfigError
from autointerp.engine.interpretation.interpret import Interpreter, StageTally, select_latents
from autointerp.engine.interpretation.llm import check_backend_config
from autointerp.engine.interpretation.scorers import needs_llm as scorers_need_llm
from autointerp.engine.interpretation.selection import parse_selection
from autointerp.engine.ray_cluster import Cluster
from autointerp.store.db import ActivationStore, now, preflight, write_failure
from autointerp.store.errors import CannotContinue, resumable
from autointerp.store.runs import RunLog
from autointerp.store.stages import BATCH_STAGES, CACHE, EXPLAIN, LATENT_STAGES, SCORE
from autointerp.store.text import printable

if TYPE_CHECKING:  # the cache's modules load torch: imported where a cache runs
    from autointerp.engine.activations.cache import CacheResult
    from autointerp.engine.activations.setup import CacheParts

log = logging.getLogger(__name__)

PLAIN_LINE_S = 30.0  # not a terminal: a plain progress line per running stage this often


class Interrupted(CannotContinue):
    """Ctrl-C (or SIGINT) during a run: what is committed stays and the same command resumes."""

    exit_code = 130


def stopped(e: BaseException, db) -> CannotContinue | None:
    """A fault that stops a run cleanly, as the error the command line reports (its message is what the run log
    records); None for anything else (bad input, a damaged file, a bug), which goes up as it is."""
    if isinstance(e, KeyboardInterrupt):
        return Interrupted(resumable("interrupted"))
    if isinstance(e, sqlite3.DatabaseError):  # a write refused: locked, read-only, the disk full
        e = write_failure(db, e)
    if isinstance(e, CannotContinue):  # the backend gone too long, a stage with no usable answer, a full disk
        return CannotContinue(resumable(str(e)))
    return None


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    m, sec = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}"


class StageETA(ProgressColumn):
    """Time left at this run's own pace, from the stage's clock. Rich's TimeRemainingColumn extrapolates the last
    speed sample and stands still while a stage waits on a slow latent; this one keeps counting, so it moves."""

    def __init__(self, clocks: dict[TaskID, StageClock]):
        super().__init__()
        self.clocks = clocks

    def render(self, task) -> Text:
        clock = self.clocks.get(task.id)
        if clock is None:
            return Text("-:--:--")
        return Text("done" if clock.ended else _hms(clock.eta_s()), style="progress.remaining")


class PlainLines:
    """Under nohup, in a log file or piped, bars do not redraw: one plain line per running stage every `interval_s`
    seconds instead, whether or not a unit ended meanwhile (a stalled stage says so, its elapsed time and ETA
    growing), and one when a stage ends."""

    def __init__(self, console: Console, interval_s: float):
        self.console, self.interval_s = console, interval_s
        self.clocks: list[StageClock] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plain-progress", daemon=True)

    def __enter__(self) -> PlainLines:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for clock in list(self.clocks):
                if not clock.ended:
                    self.print(clock)

    def print(self, clock: StageClock) -> None:
        self.console.print(clock.line(), highlight=False, markup=False)


@dataclass
class StageClock:
    """One stage's progress as shown in the terminal and written for monitors, throttled."""

    stage: str
    unit: str
    total: int
    started: float = field(default_factory=time.monotonic)
    started_at: str = ""
    last_write: float = 0.0
    done: int = 0
    first: int | None = None  # units already done when this run reached the stage (a resumed stage)
    info: str = ""
    ended: bool = False

    def update(self, done: int, info: str) -> None:
        if self.first is None:
            self.first = done
        self.done, self.info = done, info

    def eta_s(self) -> float | None:
        """Seconds left at this run's own pace (resumed units excluded), or None before any unit of this run ends."""
        here = self.done - (self.first or 0)
        if here <= 0:
            return None
        return (time.monotonic() - self.started) * (self.total - self.done) / here

    def line(self) -> str:
        """One plain progress line, for logs and pipes."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        elapsed = _hms(time.monotonic() - self.started)
        eta = "done" if self.ended else _hms(self.eta_s())
        info = f" {self.info}" if self.info else ""
        return f"{self.stage}: {self.done:,}/{self.total:,} {self.unit}{pct}{info}, elapsed {elapsed}, ETA {eta}"

    def values(self, done: int, tally: StageTally | None) -> dict:
        v = {"total": self.total, "done": done, "wall_s": time.monotonic() - self.started}
        if tally is not None:
            v.update(
                skipped=tally.skipped,
                failed=tally.failed,
                prompts=tally.prompts,
                prompt_tokens=tally.prompt_tokens,
                cached_tokens=tally.cached_tokens,
                output_tokens=tally.output_tokens,
                backend_s=tally.backend_s,
            )
        return v


class BatchRunner:
    def __init__(
        self, cfg: Config, *, redo: str | None = None, console: Console | None = None, argv: list[str] | None = None
    ):
        self.cfg, self.redo, self.argv = cfg, redo, argv or []
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal:  # a log file: wide enough for the report's tables
            self.console.width = max(self.console.width, 1000)  # tables whole, never cut with ellipses
        self.run_log: RunLog | None = None
        self.clocks: dict[TaskID, StageClock] = {}
        self.plain: PlainLines | None = None  # set while a run writes plain progress lines (not a terminal)
        self.tallies: dict[str, StageTally] = {}
        self.latents: list[int] = []
        self.cluster: Cluster | None = None  # the Ray cluster when cluster.ray_address is set
        self._board_early: dict[str, tuple[str, dict]] = {}  # worker states posted before the run log existed
        self._events_early: list[tuple[str, str, str]] = []  # and events
        self._stage = EXPLAIN  # the latent stage running (a replica pool's events are logged under it)
        self.reruns: dict[str, int] = {}  # on a cluster: units re-sent after their worker died, by kind
        self.cache_result: CacheResult | None = None  # what the cache stage did, when it ran
        self.cache_parts: CacheParts | None = None  # and the model, hook and coder it ran with

    # ---- the whole run -----------------------------------------------------------------------------

    def run(self) -> int:
        """Run every configured stage (`run_stages`), print the batch's report and return 0."""
        self.run_stages()
        self._summary()
        return 0

    def run_stages(self) -> None:
        """Run every configured stage, or raise: a stop (the backend gone too long, a full disk, a locked database,
        an interrupt) as CannotContinue, after it is recorded in the run log. What each stage did is left in
        `tallies` (the latent stages, over `latents`) and `cache_result`.

        Every input is checked before the first write or the first model load that can be avoided: the config
        (when it was read), the latent selection's syntax, the database file (through a read-only connection),
        the LLM settings, then the model, coder and corpus against the database's identity. Bad input raises
        a one-line error and leaves the file byte for byte as it was."""
        cfg = self.cfg
        interpret = [s for s in LATENT_STAGES if s in cfg.batch.stages]
        selection = parse_selection(cfg.batch.latents)
        preflight(cfg.db, must_exist=CACHE not in cfg.batch.stages, writing=True)
        from autointerp.engine.activations.identity import check_cache_site

        check_cache_site(cfg.db)  # activations from the wrong site are never resumed, explained or scored
        if not cfg.batch.stages:
            raise ConfigError(f"config key 'batch.stages' is empty: name at least one of {', '.join(BATCH_STAGES)}")
        needs_llm = EXPLAIN in interpret or (SCORE in interpret and scorers_need_llm(cfg.score.scorers))
        if needs_llm:
            check_backend_config(cfg.llm)
        if cfg.cluster.ray_address:
            from autointerp.engine.ray_cluster import connect

            with self.console.status(f"joining the Ray cluster ({cfg.cluster.ray_address}) ..."):
                self.cluster = connect(cfg.cluster.ray_address)
            self.console.print(self.cluster.describe(), markup=False, highlight=False)
        inputs, backend = None, None
        if CACHE in cfg.batch.stages and not self._cache_done():
            from autointerp.engine.activations.cache import check_cache_inputs, check_first_batch

            with self.console.status(f"loading model {cfg.cache.model!r} and coder {cfg.cache.coder!r} ..."):
                inputs = check_cache_inputs(cfg.cache, cfg.db)  # model, coder, corpus, the file's identity
            selection.check_width(inputs.parts.coder.num_latents)
            with self.console.status("checking the coder's reconstruction on the first batch ..."):
                check_first_batch(inputs, cfg.cache)  # an unusable one stops here, nothing written
        elif interpret:
            # The cache is there: the selection is resolved now, read-only, so that one matching no latent (or a
            # cache left unfinished) is refused before anything is written or any LLM is loaded.
            self.latents = select_latents(cfg, selection)
            if needs_llm:
                backend = self._backend()
        status, message = "failed", ""
        store = None
        started = time.monotonic()
        log.info("batch: stages %s over %s in %s", ",".join(cfg.batch.stages), selection.text, cfg.db)
        try:
            store = ActivationStore.open(cfg.db, create=True)
            self.run_log = RunLog(cfg.db, argv=self.argv, selection=selection.text, config=dataclasses.asdict(cfg))
            for name, (role, fields) in self._board_early.items():
                self.run_log.worker(name, role, **fields)
            for stage, kind, message in self._events_early:
                self._event(stage, kind, message)
            plain = PlainLines(self.console, PLAIN_LINE_S) if not self.console.is_terminal else nullcontext()
            with self._progress() as progress, plain:
                self.progress, self.plain = progress, plain if isinstance(plain, PlainLines) else None
                if inputs is not None:
                    store.close()  # run_cache opens its own connection
                    self._cache(inputs)
                    store = ActivationStore.open(cfg.db)
                elif CACHE in cfg.batch.stages:
                    self._event(CACHE, "skip", "cache already complete")
                if interpret:
                    if inputs is not None:
                        self.latents = select_latents(cfg, selection)
                        backend = self._backend() if needs_llm else None
                    self._interpret(store, backend, interpret)
            status, message = "done", self._closing_line()
        except BaseException as e:
            stop = stopped(e, cfg.db)
            status, message = ("stopped", str(stop)) if stop else ("failed", f"{type(e).__name__}: {e}")
            if stop is None:
                raise
            raise stop from None  # the command line reports it (`stopped: ...`, exit 3 or 130)
        finally:
            log.info("batch %s after %.1fs: %s", status, time.monotonic() - started, message)
            if self.run_log is not None:
                self.run_log.finish(status, message)
            if store is not None:
                try:
                    store.close()
                except sqlite3.Error:
                    pass  # closing checkpoints the log, which a full disk refuses; the log keeps the data
            if self.cluster is not None:
                self.cluster.close()

    def _cache_done(self) -> bool:
        """The database already holds the whole cache this config asks for (read-only: nothing written)."""
        from pathlib import Path

        from autointerp.engine.activations.cache import cache_is_complete

        if not Path(self.cfg.db).exists():
            return False
        with ActivationStore.open(self.cfg.db, readonly=True, allow_older=True) as store:
            return cache_is_complete(store, self.cfg.cache)

    def _board(self, worker: str, role: str, **fields) -> None:
        """A cluster worker's state, for the monitor (the `workers` table), kept until the run log exists."""
        if self.run_log is not None:
            self.run_log.worker(worker, role, **fields)
        else:
            _, before = self._board_early.get(worker, (role, {}))
            self._board_early[worker] = (role, {**before, **fields})

    def _llm_event(self, kind: str, message: str) -> None:
        if self.run_log is None:  # the replicas started before the run log existed
            self._events_early.append((self._stage, kind, message))
        else:
            self._event(self._stage, kind, message)

    def _backend(self):
        from autointerp.engine.interpretation.llm import make_backend

        if self.cluster is not None:
            from autointerp.engine.interpretation.llm.replicas import make_replica_pool

            with self.console.status(f"starting LLM replicas ({self.cfg.llm.backend}, {self.cfg.llm.model}) ..."):
                return make_replica_pool(
                    self.cluster,
                    self.cfg.llm,
                    self.cfg.cluster,
                    board=self._board,
                    on_event=self._llm_event,
                )
        with self.console.status(f"loading LLM backend {self.cfg.llm.backend} ({self.cfg.llm.model}) ..."):
            return make_backend(self.cfg.llm)

    # ---- progress ----------------------------------------------------------------------------------

    def _progress(self) -> Progress:
        columns = (
            TextColumn("[bold]{task.description:8s}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            StageETA(self.clocks),
        )
        # Not a terminal: the bars would only be dumped at the end; PlainLines writes lines as the run goes.
        return Progress(*columns, console=self.console, disable=not self.console.is_terminal)

    def _clock(self, stage: str, unit: str, total: int) -> tuple[StageClock, TaskID]:
        # Latent stages count from 0 (latents found done are skipped in an instant and counted as they come); the
        # cache's first report is the tokens a resumed cache already holds.
        clock = StageClock(stage, unit, total, started_at=now(), first=0 if unit == "latents" else None)
        task = self.progress.add_task(stage, total=total, unit=unit, info="")
        self.clocks[task] = clock
        if self.plain is not None:
            self.plain.clocks.append(clock)
        log.info("%s: started (%s %s)", stage, f"{total:,}", unit)
        return clock, task

    def _report(
        self, clock: StageClock, task: TaskID, done: int, info: str, tally: StageTally | None, final: bool = False
    ) -> None:
        clock.update(done, info)
        clock.ended = final
        self.progress.update(task, completed=done, info=info)
        now = time.monotonic()
        if final:
            log.info(
                "%s: ended after %.1fs, %s/%s %s, %s",
                clock.stage,
                now - clock.started,
                f"{done:,}",
                f"{clock.total:,}",
                clock.unit,
                info,
            )
        if final or now - clock.last_write >= self.cfg.batch.progress_interval_s:
            clock.last_write = now
            self.run_log.progress(
                clock.stage, clock.unit, clock.values(done, tally), started_at=clock.started_at, ended=final
            )
        if final and self.plain is not None:
            self.plain.print(clock)

    def _event(self, stage: str, kind: str, message: str) -> None:
        log.log(logging.WARNING if kind in ("outage", "warning") else logging.INFO, "%s %s: %s", stage, kind, message)
        self.run_log.event(stage, kind, message)
        if kind in ("outage", "resumed", "skip", "warning"):
            self.console.print(f"{stage}: {printable(message)}", markup=False, highlight=False, soft_wrap=True)

    # ---- stages ------------------------------------------------------------------------------------

    def _cache(self, inputs) -> None:
        from autointerp.engine.activations.cache import run_cache

        total = self.cfg.cache.n_sequences * self.cfg.cache.seq_len
        clock, task = self._clock(CACHE, "tokens", total)
        first: list[int] = []  # tokens already committed when this run started (a resumed cache)

        def on_progress(done: int, total: int) -> None:
            if not first:
                first.append(done)
            rate = (done - first[0]) / max(time.monotonic() - clock.started, 1e-9)
            self._report(clock, task, done, f"{rate:,.0f} tok/s", None)

        encoder = None
        if self.cluster is not None:
            from autointerp.engine.activations.shards import RayEncoder

            encoder = RayEncoder(
                self.cluster,
                self.cfg.cache,
                self.cfg.cluster,
                board=self._board,
                on_event=lambda kind, msg: self._event(CACHE, kind, msg),
            )
        result = run_cache(
            self.cfg.cache,
            self.cfg.db,
            on_progress,
            inputs=inputs,
            on_event=lambda kind, msg: self._event(CACHE, kind, msg),
            encoder=encoder,
        )
        self.cache_result, self.cache_parts = result, inputs.parts
        if encoder is not None:
            self.reruns["chunks"] = encoder.chunks_rerun
        self._report(clock, task, total, f"{result.tokens_per_s:,.0f} tok/s", None, final=True)

    def _interpret(self, store: ActivationStore, backend, stages: Sequence[str]) -> None:
        interp = Interpreter(self.cfg, store, backend)
        try:
            self.run_log.set_latents(len(self.latents))
            asyncio.run(self._stages(interp, backend, stages))
        finally:
            interp.close()

    async def _stages(self, interp: Interpreter, backend, stages: Sequence[str]) -> None:
        try:
            for stage in stages:
                redo = self.redo == stage or (self.redo == EXPLAIN and stage == SCORE)
                self._stage = stage
                clock, task = self._clock(stage, "latents", len(self.latents))

                def on_latent(latent: int, tally: StageTally, clock=clock, task=task) -> None:
                    minutes = max(time.monotonic() - clock.started, 1e-9) / 60
                    rate = tally.prompt_tokens / max(tally.backend_s, 1e-9)
                    info = f"{tally.done / minutes:,.1f} latents/min, {rate:,.0f} prompt tok/s, {tally.failed} failed"
                    self._report(clock, task, tally.done + tally.skipped, info, tally)

                def on_event(kind: str, msg: str, stage: str = stage) -> None:
                    self._event(stage, kind, msg)

                tally = await interp.run_stage(stage, self.latents, redo, on_latent, on_event)
                self.tallies[stage] = tally
                self._report(clock, task, len(self.latents), f"{tally.failed} failed", tally, final=True)
        finally:
            if backend is not None:
                await backend.aclose()
                if hasattr(backend, "calls_rerun"):  # a replica pool
                    self.reruns["latent calls"] = backend.calls_rerun

    # ---- the end -----------------------------------------------------------------------------------

    def _closing_line(self) -> str:
        parts = [f"{s}: {t.done} done, {t.skipped} skipped, {t.failed} failed" for s, t in self.tallies.items()]
        lost = [f"{n} {what}" for what, n in self.reruns.items() if n]
        if lost:
            parts.append(f"re-sent after their worker died: {', '.join(lost)}")
        return "; ".join(parts) or "nothing to do"

    def _summary(self) -> None:
        from .report import batch_report, print_report

        with ActivationStore.open(self.cfg.db, readonly=True) as store:
            report = batch_report(
                store,
                self.cfg.explain.explainer,
                self.latents or None,
                self.cfg.batch.usd_per_million_prompt_tokens,
                self.cfg.batch.usd_per_million_output_tokens,
            )
        print_report(report, self.console)
        db = self.cfg.db
        self.console.print(
            "browse the results:\n"
            f"  autointerp-tui {db}               latents, heatmaps, every score's evidence, audits\n"
            f"  autointerp report {db}            per-scorer metrics, failures, tokens, time\n"
            f"  autointerp info {db}              the cache and what is explained\n"
            f"  autointerp export {db} --format json --out results/\n"
            f"  sqlite-utils tables {db} --counts  (or: datasette {db})",
            highlight=False,
        )


def run_one_stage(
    cfg: Config,
    stage: str,
    *,
    latents: str | None = None,
    redo: bool = False,
    console: Console | None = None,
    argv: list[str] | None = None,
) -> BatchRunner:
    """`autointerp cache`, `explain` or `score`: a batch of that one stage, with the batch's checks, progress, run
    log and stop handling, in this process (a Ray cluster is the batch's: `batch --ray`). Returns the runner, for
    the command to print what the stage did (`cache_result`, `tallies`)."""
    cfg.batch.stages = [stage]
    if latents is not None:
        cfg.batch.latents = latents
    cfg.cluster.ray_address = ""
    runner = BatchRunner(cfg, redo=stage if redo else None, console=console, argv=argv)
    runner.run_stages()
    return runner
