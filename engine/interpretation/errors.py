"""The explain/score stage's faults, in the error hierarchy of store/errors.py."""

from __future__ import annotations

from autointerp.store.errors import CannotContinue, UserError


class InterpretError(UserError):
    """A store or selection that explain/score cannot use, stated in one line."""


class BackendUnavailable(CannotContinue):
    """Every call for a latent failed because the backend could not be reached: nothing was stored for it."""


class StageFailed(CannotContinue):
    """A stage made LLM calls and not one of them gave a usable answer: it must not end as a success."""
