"""One way to wait for something in the kit: `poll_until`.

Every "ask again until it is so, or give up" loop of the kit (the blob store coming up or going
away, a tunnel listening, a check waiting for an app to recover) goes through here, so that the
pause between tries, the deadline and the give-up are decided once::

    server = poll_until(lambda: status(directory), timeout=15, interval=0.05)

`check` returns a *truthy* value when the wait is over (that value is returned), or a falsy one to
try again. It may also raise, which ends the wait with its exception (a process that exited while
it was awaited, say). When the deadline passes, `poll_until` raises `on_timeout()` if given, else
`PollTimeout`, which carries the last value `check` returned (for a caller that reports it).

localcf has a helper of the same shape; the kit keeps its own, as it does not reach into localcf.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["PollTimeout", "poll_until"]

T = TypeVar("T")


class PollTimeout(TimeoutError):
    """The condition did not come true in time; `last` is the last value `check` returned."""

    def __init__(self, what: str, timeout: float, last: object = None):
        super().__init__(f"{what} did not happen within {timeout:g} s")
        self.what, self.timeout, self.last = what, timeout, last


def poll_until(
    check: Callable[[], T | None],
    *,
    timeout: float | None,
    interval: float = 0.05,
    what: str = "the condition",
    on_timeout: Callable[[], BaseException] | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that.

    `timeout` in seconds (None waits for ever); `interval` is the pause between tries. The check is
    always made at least once, and once more at the deadline, so a slow machine that wakes up late
    still sees a condition that has come true. A timeout of 0 or less makes that one check only.
    """
    if interval < 0:
        raise ValueError(f"poll_until: interval must be 0 or more seconds, not {interval!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    last: T | None = None
    while True:
        last = check()
        if last:
            return last
        if deadline is not None and time.monotonic() >= deadline:
            break
        pause = interval if deadline is None else min(interval, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)
    if on_timeout is not None:
        raise on_timeout()
    raise PollTimeout(what, timeout or 0, last)
