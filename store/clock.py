"""The store's time stamps: UTC ISO 8601 with microseconds.

Sub-second, so two writes in one second still order (and tests need not sleep); every stamp has the
same width, so text order is time order. Stamps from files written before (whole seconds) still parse.
"""

from datetime import datetime, timezone


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
