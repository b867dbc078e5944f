"""One way to wait for something in localcf: `poll_until`.

Every "ask again until it is so, or give up" loop of the package goes through here, so that the
pause between tries, the deadline and the give-up are decided once::

    stats = poll_until(lambda: running_or_none(), timeout=60, interval=0.05)

The pause is `interval`, or, with `backoff` above 1, grows by that factor after each try up to
`max_interval` (a health check that tries often at first and less often later).

`check` returns a *truthy* value when the wait is over (that value is returned), or a falsy one to
try again. It may also raise, which ends the wait with its exception (a crash seen while waiting
for a start, say). When the deadline passes, `poll_until` raises `on_timeout()` if given, else
`PollTimeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
    backoff: float = 1.0,
    max_interval: float | None = None,
) -> T:
    """Call `check` until it returns something truthy, and return that.

    `timeout` in seconds (None waits for ever); `interval` is the first pause between tries, each
    next one `backoff` times longer, at most `max_interval` (default: no bound). The check is always
    made at least once, and once more at the deadline, so a slow machine that wakes up late still
    sees a condition that has come true.
    """
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
        interval *= backoff
        if max_interval is not None:
            interval = min(interval, max_interval)
    if on_timeout is not None:
        raise on_timeout()
    raise PollTimeout(what, timeout or 0, last)
