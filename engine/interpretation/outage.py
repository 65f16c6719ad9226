"""An LLM backend that cannot be reached: calls are sent again after a pause, and a stage stops cleanly once the
outage outlasts its budget (what is stored stays, the next run resumes)."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from .errors import BackendUnavailable
from .llm import LLMBackend, LLMRequest, LLMResponse

log = logging.getLogger(__name__)


class Outage:
    """Shared by a stage's latents: how long the backend has been unreachable, and the pause before a retry.

    The clock starts at the first call left unanswered (its send time), not when its retries give up; any answer
    ends the outage. Past `budget_s` of continuous outage the stage stops (a clean stop: what is stored stays,
    the next run resumes) instead of waiting forever. A lone transient failure among answers is retried quietly;
    an outage is announced (an event) once a retry after a pause has failed too."""

    def __init__(self, budget_s: float, on_event: Callable[[str, str], None] | None = None):
        self.budget_s, self.on_event = budget_s, on_event
        self.since: float | None = None
        self.attempt = 0
        self.announced = False

    def ok(self) -> None:
        if self.announced:
            log.warning("backend reachable again; resuming")
            if self.on_event:
                self.on_event("resumed", "backend reachable again; resuming")
        self.since, self.attempt, self.announced = None, 0, False

    def give_up(self, why: str) -> BackendUnavailable:
        waited = asyncio.get_running_loop().time() - (self.since if self.since is not None else 0.0)
        return BackendUnavailable(f"the LLM backend was unavailable for {waited:.0f}s ({why})")

    async def pause(self, error: str, since: float) -> None:
        """Wait before sending again the calls that failed for a transient reason; raises past the budget."""
        loop = asyncio.get_running_loop()
        if self.since is None:
            self.since = since
        waited = loop.time() - self.since
        if waited >= self.budget_s:
            log.warning(
                "backend unavailable for %.0fs, past outage_wait_s = %g: stopping (%s)", waited, self.budget_s, error
            )
            raise self.give_up(error)
        self.attempt += 1
        if self.attempt >= 2 and not self.announced:
            self.announced = True
            message = f"backend unavailable ({error}); pausing and retrying for up to {self.budget_s:.0f}s"
            log.warning("%s", message)
            if self.on_event:
                self.on_event("outage", message)
        delay = min(0.5 * 2 ** min(self.attempt, 6), 30.0, self.budget_s - waited + 0.01)
        log.info("retry %d after %.1fs (%s; unavailable for %.0fs so far)", self.attempt, delay, error, waited)
        await asyncio.sleep(delay)

    async def watch(self, backend: LLMBackend) -> None:
        """Stop the stage when calls have waited `budget_s` with no answer at all (a hanging server): without
        this, a hang would be noticed only after every call's timeout and retries (hours with the defaults)."""
        tick = min(1.0, max(self.budget_s / 8, 0.05))
        while True:
            await asyncio.sleep(tick)
            silent = backend.silent_s()
            if silent >= self.budget_s:
                log.warning("the backend answered nothing for %.0fs: stopping", silent)
                raise BackendUnavailable(
                    f"the LLM backend answered nothing for {silent:.0f}s "
                    f"(calls waiting; outage_wait_s = {self.budget_s:g})"
                )


async def complete_answered(backend: LLMBackend, outage: Outage, requests: list[LLMRequest]) -> list[LLMResponse]:
    """One response per request, none of them a transient failure: requests that found no server are sent
    again after the stage's outage pause (only those; the others' answers are kept), until answered or the
    outage outlasts its budget (BackendUnavailable: nothing of this latent is stored)."""
    responses = list(await backend.complete_many(requests))
    fresh = responses
    while True:
        if any(not r.unavailable for r in fresh):
            outage.ok()  # a server answered: whatever failed beside it is no outage (yet)
        waiting = [i for i, r in enumerate(responses) if r.unavailable]
        if not waiting:
            return responses
        first = responses[waiting[0]]
        await outage.pause(first.error or "unavailable", asyncio.get_running_loop().time() - first.latency_s)
        log.info("sending %d unanswered call(s) again", len(waiting))
        fresh = await backend.complete_many([requests[i] for i in waiting])
        for i, r in zip(waiting, fresh):
            responses[i] = r
