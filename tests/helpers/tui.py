"""Driving the Textual app in tests through its public pilot."""

from __future__ import annotations

from textual.notifications import Notification, Notify


async def until(pilot, condition, timeout: float = 10.0) -> None:
    """Wait (pausing the pilot) until `condition()` holds; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError("condition not reached in time")


class Notifications(list[Notification]):
    """Every notification the app raised, in order, expired ones included: pass it as `run_test`'s message_hook
    (which sees each message the app handles, Textual's Notify among them)."""

    def __call__(self, message) -> None:
        if isinstance(message, Notify):
            self.append(message.notification)

    def messages(self) -> list[str]:
        return [str(n.message) for n in self]
