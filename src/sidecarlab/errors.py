"""The kit's error root: every error the kit raises for a learner says what was wrong and what to do.

The notebook error display (`sidecarlab.magics`) shows any `KitError` as that one message, without a
Python traceback; the check failures (`CheckFailed`) too.
"""

from __future__ import annotations

__all__ = ["KitError"]


class KitError(RuntimeError):
    """An error whose message is meant for the learner: what went wrong, and what to do about it.

    `hint` is the "what to do" part on its own, when the raiser knows one (checks quote it as
    their hint).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
