"""One stage (explain or score) over many latents: how many run at once, the events and the tally, the outage
watch, and how the stage ends (a clean stop, a failed stage, or its tally). The work of one latent is a
`LatentWork`'s (interpret.py's Interpreter is the one)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from .errors import BackendUnavailable, StageFailed
from .llm.base import CURRENT_LATENT
from .outage import Outage
from .tally import StageTally

if TYPE_CHECKING:
    from autointerp.engine.config import Config
    from autointerp.store.db import ActivationStore

    from .llm import LLMBackend

log = logging.getLogger(__name__)


class LatentWork(Protocol):
    """What a stage runs over its latents: one latent's explain or score, on the store the rows go to."""

    @property
    def cfg(self) -> Config: ...
    @property
    def store(self) -> ActivationStore: ...
    @property
    def backend(self) -> LLMBackend | None: ...

    def begin_stage(self, latents: list[int], outage: Outage) -> None:
        """A stage over `latents` starts: its calls wait out `outage`."""

    async def explain_latent(self, latent: int, redo: bool) -> tuple[dict | None, str | None]: ...

    async def score_latent(self, latent: int, redo: bool) -> tuple[list[dict], str | None]: ...

    def latents_in_flight(self) -> int: ...

    def off_loop(self, fn: Callable, *args) -> Awaitable[Any]:
        """Run `fn(*args)` on the store's worker thread (in order with the results it writes)."""

    def log_event(self, stage: str, kind: str, message: str, data: dict | None) -> None:
        """Write an event to the store's log, on its worker thread (in order with the results)."""


def first_error(eg: BaseExceptionGroup) -> BaseException:
    """The first real error inside (possibly nested) task groups, past the cancellations it caused."""
    for e in eg.exceptions:
        if isinstance(e, BaseExceptionGroup):
            inner = first_error(e)
            if not isinstance(inner, asyncio.CancelledError):
                return inner
        elif not isinstance(e, asyncio.CancelledError):
            return e
    return eg.exceptions[0]


def pack_sort_columns(interp: LatentWork) -> None:
    """Each configured scorer's primary metric over every latent, packed (store/columns.py): a reader of a million
    latents then sorts by it without reading a million rows. On the store's thread, after the stage's writes."""
    from autointerp.store.columns import pack_score_columns

    from .scorers import primary_metric

    t = time.perf_counter()
    metrics = {scorer: primary_metric(scorer) for scorer in interp.cfg.score.scorers}
    pack_score_columns(interp.store.db.conn, interp.cfg.explain.explainer, metrics)
    log.info("score: %d sort columns packed in %.1fs", len(metrics), time.perf_counter() - t)


def record_scorer_meta(interp: LatentWork) -> None:
    """What each configured scorer is (primary metric, outcome, evidence), written before its first score so every
    reader of the file (browser, TUI, report, export) reads it there (store/scorer_meta.py). On the store's thread."""
    from autointerp.store.scorer_meta import record_scorers

    from .scorers import SCORERS

    conn = interp.store.db.conn
    with conn:
        record_scorers(conn, [SCORERS[s].meta for s in interp.cfg.score.scorers if s in SCORERS])


async def run_stage(
    interp: LatentWork,
    stage: str,
    latents: list[int],
    redo: bool = False,
    on_latent: Callable[[int, StageTally], None] | None = None,
    on_event: Callable[[str, str], None] | None = None,
) -> StageTally:
    """Run one stage over `latents` (see interpret.Interpreter.run_stage)."""
    tally = StageTally()
    started = time.perf_counter()

    def event(kind: str, message: str, data: dict | None = None) -> None:
        if on_event is not None:  # a caller with its own event log (the batch's RunLog)
            on_event(kind, message)
        else:  # on the store's own thread, in order with the results
            interp.log_event(stage, kind, message, data)

    outage = Outage(interp.cfg.batch.outage_wait_s, event)
    interp.begin_stage(latents, outage)

    async def one(latent: int) -> None:
        t = time.perf_counter()
        CURRENT_LATENT.set(latent)  # this worker task's calls are this latent's (a replica pool's monitor shows it)
        if stage == "explain":
            row, why = await interp.explain_latent(latent, redo)
            rows = [row] if row else []
        else:
            rows, why = await interp.score_latent(latent, redo)
        log.debug(
            "%s latent %d: %d row(s) in %.2fs%s",
            stage,
            latent,
            len(rows),
            time.perf_counter() - t,
            f" ({why})" if why else "",
        )
        tally.add_latent(stage, rows, why)
        if on_latent:
            on_latent(latent, tally)

    async def all_latents() -> None:
        # A fixed pool of workers takes latents from one iterator, in order, as each finishes the last: a task
        # exists only per latent in flight, not per latent selected (a million waiting tasks were ~2 GB).
        todo = iter(latents)

        async def worker() -> None:
            for x in todo:
                await one(x)

        async with asyncio.TaskGroup() as group:  # the first error cancels the other workers
            for _ in range(min(interp.latents_in_flight(), len(latents))):
                group.create_task(worker())

    if stage == "score":
        await interp.off_loop(record_scorer_meta, interp)
    event("start", f"{stage}: {len(latents)} latents", {"latents": len(latents)})
    log.info("%s: %d latents", stage, len(latents))
    try:
        async with asyncio.TaskGroup() as outer:
            dog = outer.create_task(outage.watch(interp.backend)) if interp.backend is not None else None
            await all_latents()
            if dog is not None:
                dog.cancel()
    except BaseExceptionGroup as eg:
        error = first_error(eg)
        if isinstance(error, BackendUnavailable):
            event("stopped", f"{stage}: {error}")
        raise error from None
    finally:
        await interp.off_loop(lambda: None)  # the events queued on the store's thread are written
    if stage == "score":  # each scorer's sort column, packed for readers of a million latents (store/columns.py)
        await interp.off_loop(pack_sort_columns, interp)
    reasons = "; ".join(f"{n} {why}" for why, n in tally.reasons.most_common())
    event(
        "end",
        f"{stage}: {tally.done} done, {tally.skipped} skipped, {tally.failed} failed"
        + (f" ({reasons})" if reasons else ""),
        {"done": tally.done, "skipped": tally.skipped, "failed": tally.failed},
    )
    log.info(
        "%s: %d latents (%d done, %d skipped, %d failed), %d LLM calls, %.1fs",
        stage,
        len(latents),
        tally.done,
        tally.skipped,
        tally.failed,
        tally.prompts,
        time.perf_counter() - started,
    )
    await interp.off_loop(lambda: None)
    if tally.all_failed:
        raise StageFailed(
            f"every LLM call of the {stage} stage failed ({tally.failure_summary()}); what failed "
            "is stored and retried by the next run: check the LLM server, then rerun"
        )
    return tally
