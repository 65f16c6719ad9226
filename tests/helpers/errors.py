"""Bad input is one error line: the message a refusal raises, checked to be a single line."""

from __future__ import annotations

import pytest

from autointerp.store.errors import UserError


def error_of(fn, *args, error: type[Exception] = UserError) -> str:
    """The message of the `error` that `fn(*args)` raises, asserted to be one line."""
    with pytest.raises(error) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message
    return message
