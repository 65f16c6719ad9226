"""Driving the Textual app in tests through its public pilot."""

from __future__ import annotations


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Wait (pausing the pilot) until `condition()` holds; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached in time")
