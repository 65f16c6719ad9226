"""`autointerp batch`: cache -> explain -> score for a selection of latents, resumable at any moment.

Every unit of work is committed in its own transaction (a cache chunk, one latent's explanation, one
latent's scores), and each stage skips what is committed, so a killed run rerun with the same command
ends with the same database as an uninterrupted one. Progress goes to the terminal (rich) and, throttled,
to the database (`runs`, `progress`, `events`) for monitors in other processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autointerp.store.db import ActivationStore, now
from autointerp.store.runs import RunLog

from .config import Config
from .interpret import BackendUnavailable, InterpretError, Interpreter, StageTally
from .scorers import needs_llm as scorers_need_llm

REDO_CHOICES = ("explain", "score")

# Exit statuses besides 0 (done) and 2 (bad input).
EXIT_STOPPED = 3  # a clean stop (backend gone for too long, disk full): rerun the same command to resume
EXIT_INTERRUPTED = 130


class BatchStopped(Exception):
    """The run stopped cleanly before the end; everything committed stays and the next run resumes."""


def selection_text(latents) -> str:
    return ",".join(map(str, latents)) if isinstance(latents, list) else latents


def cache_is_complete(store: ActivationStore, cfg: Config) -> bool:
    """The database already holds the whole cache this config asks for (same settings, every chunk)."""
    from .cache import chunk_seqs_for

    prov = store.provenance
    if prov is None or store.db["latents"].count == 0:
        return False
    stored = json.loads(prov["config"])
    wanted = dataclasses.asdict(cfg.cache)
    ignore = {"batch_size", "device", "dtype"}  # how it was computed, not what was computed
    if any(stored.get(k) != v for k, v in wanted.items() if k not in ignore):
        return False
    per_chunk = chunk_seqs_for(cfg.cache.seq_len, cfg.cache.chunk_tokens)
    return len(store.chunks()) >= -(-cfg.cache.n_sequences // per_chunk)


@dataclass
class StageClock:
    """One stage's progress as shown in the terminal and written for monitors, throttled."""

    stage: str
    unit: str
    total: int
    started: float = field(default_factory=time.monotonic)
    started_at: str = ""
    last_write: float = 0.0
    last_line: float = 0.0

    def values(self, done: int, tally: StageTally | None) -> dict:
        v = {"total": self.total, "done": done, "wall_s": time.monotonic() - self.started}
        if tally is not None:
            v.update(skipped=tally.skipped, failed=tally.failed, prompts=tally.prompts,
                     prompt_tokens=tally.prompt_tokens, cached_tokens=tally.cached_tokens,
                     output_tokens=tally.output_tokens, backend_s=tally.backend_s)  # fmt: skip
        return v


class BatchRunner:
    def __init__(self, cfg: Config, *, redo: str | None = None, console: Console | None = None,
                 argv: list[str] | None = None):  # fmt: skip
        self.cfg, self.redo, self.argv = cfg, redo, argv or []
        self.console = console or Console(stderr=True)
        if not self.console.is_terminal:  # a log file: wide enough for the report's tables
            self.console.width = max(self.console.width, 140)
        self.run_log: RunLog | None = None
        self.tallies: dict[str, StageTally] = {}
        self.latents: list[int] = []

    # ---- the whole run -----------------------------------------------------------------------------

    def run(self) -> int:
        """Run every configured stage; returns the exit status (0 done, 3 stopped, 130 interrupted)."""
        cfg = self.cfg
        parts = None
        cache_state = self._cache_state() if "cache" in cfg.batch.stages else "done"
        if cache_state != "done":
            from .setup import prepare

            # Model, hook, coder and corpus are checked before the database is created or touched.
            self.console.print(f"loading model {cfg.cache.model!r} and coder {cfg.cache.coder!r} ...")
            parts = prepare(cfg.cache)
        store = ActivationStore.open(cfg.db, create="cache" in cfg.batch.stages)
        status, message, code = "failed", "", 1
        try:
            self.run_log = RunLog(cfg.db, argv=self.argv, selection=selection_text(cfg.batch.latents),
                                  config=dataclasses.asdict(cfg))  # fmt: skip
            with self._progress() as progress:
                self.progress = progress
                if cache_state == "annotate":  # a cache made before annotations existed
                    self._event("cache", "skip", "cache already complete")
                    self._annotate(store, parts)
                elif parts is not None:
                    store.close()  # run_cache opens its own connection
                    self._cache(parts)
                    store = ActivationStore.open(cfg.db)
                elif "cache" in cfg.batch.stages:
                    self._event("cache", "skip", "cache already complete")
                if {"explain", "score"} & set(cfg.batch.stages):
                    self._interpret(store)
            status, message, code = "done", self._closing_line(), 0
        except BackendUnavailable as e:
            status, message, code = "stopped", f"{e}; rerun the same command to resume", EXIT_STOPPED
        except sqlite3.OperationalError as e:
            status, code = "stopped", EXIT_STOPPED
            message = (f"cannot write {cfg.db}: {e} (is the disk full?); everything committed is kept: "
                       "free space and rerun the same command to resume")  # fmt: skip
        except KeyboardInterrupt:
            status, message, code = "stopped", "interrupted; rerun the same command to resume", EXIT_INTERRUPTED
        except BaseException as e:
            status, message = "failed", f"{type(e).__name__}: {e}"
            raise
        finally:
            if self.run_log is not None:
                self.run_log.finish(status, message)
            try:
                store.close()
            except sqlite3.Error:
                pass  # closing checkpoints the log, which a full disk refuses; the log keeps the data
        if code == 0:
            self._summary()
        else:
            self.console.print(f"[bold red]stopped:[/] {message}", markup=True, highlight=False)
        return code

    def _cache_state(self) -> str:
        """"done", "annotate" (complete, but without the vocabulary / directions tables' rows) or "todo"."""
        from pathlib import Path

        from .annotate import needs_annotation

        if not Path(self.cfg.db).exists():
            return "todo"
        with ActivationStore.open(self.cfg.db) as store:  # read-write: an older schema is migrated here
            if not cache_is_complete(store, self.cfg):
                return "todo"
            return "annotate" if needs_annotation(store) else "done"

    # ---- progress ----------------------------------------------------------------------------------

    def _progress(self) -> Progress:
        columns = (
            TextColumn("[bold]{task.description:8s}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
            TextColumn("ETA"), TimeRemainingColumn(),
        )  # fmt: skip
        return Progress(*columns, console=self.console)

    def _clock(self, stage: str, unit: str, total: int) -> tuple[StageClock, int]:
        clock = StageClock(stage, unit, total, started_at=now())
        task = self.progress.add_task(stage, total=total, unit=unit, info="")
        return clock, task

    def _report(self, clock: StageClock, task: int, done: int, info: str, tally: StageTally | None,
                final: bool = False) -> None:  # fmt: skip
        self.progress.update(task, completed=done, info=info)
        now = time.monotonic()
        if final or now - clock.last_write >= self.cfg.batch.progress_interval_s:
            clock.last_write = now
            self.run_log.progress(clock.stage, clock.unit, clock.values(done, tally), started_at=clock.started_at,
                                  ended=final)  # fmt: skip
        # Under nohup or in a log file the bars do not redraw: a plain line every 30 s instead.
        if not self.console.is_terminal and (final or now - clock.last_line >= 30):
            clock.last_line = now
            self.console.print(f"{clock.stage}: {done:,}/{clock.total:,} {clock.unit} {info}", highlight=False)

    def _event(self, stage: str, kind: str, message: str) -> None:
        self.run_log.event(stage, kind, message)
        if kind in ("outage", "resumed", "skip", "warning"):
            self.console.print(f"{stage}: {message}", highlight=False)

    # ---- stages ------------------------------------------------------------------------------------

    def _cache(self, parts) -> None:
        from .cache import run_cache

        total = self.cfg.cache.n_sequences * self.cfg.cache.seq_len
        clock, task = self._clock("cache", "tokens", total)
        first: list[int] = []  # tokens already committed when this run started (a resumed cache)

        def on_progress(done: int, total: int) -> None:
            if not first:
                first.append(done)
            rate = (done - first[0]) / max(time.monotonic() - clock.started, 1e-9)
            self._report(clock, task, done, f"{rate:,.0f} tok/s", None)

        result = run_cache(self.cfg.cache, self.cfg.db, on_progress, parts=parts,
                           on_event=lambda kind, msg: self._event("cache", kind, msg))  # fmt: skip
        self._report(clock, task, total, f"{result.tokens_per_s:,.0f} tok/s", None, final=True)

    def _annotate(self, store: ActivationStore, parts) -> None:
        from .annotate import annotate

        result = annotate(store, parts.model, parts.coder, on_event=lambda kind, msg: self._event("cache", kind, msg))
        self._event("cache", "annotate", result.describe())
        self.console.print(f"cache: {result.describe()}", highlight=False)

    def _interpret(self, store: ActivationStore) -> None:
        from .llm import make_backend

        cfg = self.cfg
        stages = [s for s in ("explain", "score") if s in cfg.batch.stages]
        needs_llm = "explain" in stages or scorers_need_llm(cfg.score.scorers)
        if needs_llm:
            self.console.print(f"loading LLM backend {cfg.llm.backend} ({cfg.llm.model}) ...", highlight=False)
        backend = make_backend(cfg.llm) if needs_llm else None
        interp = Interpreter(cfg, store, backend)
        try:
            selection = selection_text(cfg.batch.latents)
            self.latents = interp.select(selection)
            if not self.latents:
                raise InterpretError(f"latent selection {selection!r} matches no live latent")
            self.run_log.set_latents(len(self.latents))
            asyncio.run(self._stages(interp, backend, stages))
        finally:
            interp.close()

    async def _stages(self, interp: Interpreter, backend, stages: list[str]) -> None:
        try:
            for stage in stages:
                redo = self.redo == stage or (self.redo == "explain" and stage == "score")
                clock, task = self._clock(stage, "latents", len(self.latents))

                def on_latent(latent: int, tally: StageTally, clock=clock, task=task) -> None:
                    minutes = max(time.monotonic() - clock.started, 1e-9) / 60
                    rate = tally.prompt_tokens / max(tally.backend_s, 1e-9)
                    info = (f"{tally.done / minutes:,.1f} latents/min, {rate:,.0f} prompt tok/s, "
                            f"{tally.failed} failed")  # fmt: skip
                    self._report(clock, task, tally.done + tally.skipped, info, tally)

                tally = await interp.run_stage(stage, self.latents, redo, on_latent,
                                               lambda kind, msg, stage=stage: self._event(stage, kind, msg))
                self.tallies[stage] = tally
                self._report(clock, task, len(self.latents), f"{tally.failed} failed", tally, final=True)
        finally:
            if backend is not None:
                await backend.aclose()

    # ---- the end -----------------------------------------------------------------------------------

    def _closing_line(self) -> str:
        parts = [f"{s}: {t.done} done, {t.skipped} skipped, {t.failed} failed" for s, t in self.tallies.items()]
        return "; ".join(parts) or "nothing to do"

    def _summary(self) -> None:
        from .report import batch_report, print_report

        with ActivationStore.open(self.cfg.db, readonly=True) as store:
            report = batch_report(store, self.cfg.explain.explainer, self.latents or None,
                                  self.cfg.batch.usd_per_million_prompt_tokens,
                                  self.cfg.batch.usd_per_million_output_tokens)  # fmt: skip
        print_report(report, self.console)
        db = self.cfg.db
        self.console.print(
            "browse the results:\n"
            f"  autointerp report {db}            per-scorer metrics, failures, tokens, time\n"
            f"  autointerp info {db}              the cache and what is explained\n"
            f"  autointerp export {db} --format json --out results/\n"
            f"  sqlite-utils tables {db} --counts  (or: datasette {db})",
            highlight=False,
        )
