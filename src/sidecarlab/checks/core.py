"""The check core: each check proves one claim of the tutorial on any target.

A check prints exactly one line: `✅ <what was proven>`, or `⏭️ skipped: <claim> (<why>)` when the
target cannot show it (a claim about container isolation on a platform without containers is
never reported as passed). Otherwise it raises `CheckFailed` with what was expected, what was seen
and a hint: the learner's feedback in the notebook, and CI's failure message.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from ..polling import PollTimeout, poll_until
from ..targets import Target, TargetError

__all__ = [
    "DEFAULT_DEADLINE",
    "FAILED_MARK",
    "PASSED_MARK",
    "POLL_SECONDS",
    "SKIPPED_MARK",
    "CheckFailed",
    "CheckResult",
    "check",
    "fail",
    "poll",
    "short",
]

PASSED_MARK = "✅"
SKIPPED_MARK = "⏭️"
FAILED_MARK = "❌"

# How long a check waits for the platform to get somewhere (a restart, a route). A guard
# against hanging, not a performance claim.
DEFAULT_DEADLINE = 60.0
POLL_SECONDS = 0.5


class CheckFailed(AssertionError):
    """A claim did not hold: what was checked, what was expected, what was seen, what to do."""

    def __init__(self, what: str, expected: str, seen: str, hint: str) -> None:
        self.what, self.expected, self.seen, self.hint = what, expected, seen, hint
        super().__init__(
            f"{FAILED_MARK} {what}\n"
            f"   expected: {expected}\n"
            f"   seen:     {seen}\n"
            f"   hint:     {hint}"
        )


@dataclass
class CheckResult:
    """The outcome of a check that did not fail: passed (with what it proved) or skipped (why)."""

    status: str
    statement: str
    reason: str = ""
    data: Any = None

    @property
    def passed(self) -> bool:
        """True when the claim was proven (a skipped check did not prove it)."""
        return self.status == "passed"

    def line(self) -> str:
        """The one line the check prints."""
        if self.status == "passed":
            return f"{PASSED_MARK} {self.statement}"
        return f"{SKIPPED_MARK} skipped: {self.statement} ({self.reason})"

    def __repr__(self) -> str:
        return self.line()

    def _ipython_display_(self) -> None:
        # The check already printed its line; a notebook should not show it twice.
        pass


class _Fail(Exception):
    def __init__(self, expected: str, seen: str, hint: str) -> None:
        super().__init__(expected)
        self.expected, self.seen, self.hint = expected, seen, hint


def fail(expected: str, seen: str, hint: str) -> NoReturn:
    """Inside a check: stop with what was expected, what was seen and a hint."""
    raise _Fail(expected, seen, hint)


F = TypeVar("F", bound=Callable[..., Any])


def check(claim: str, *, needs_isolation: bool = False) -> Callable[[F], Callable[..., CheckResult]]:
    """Make `fn(target, app, ...)` a check. `claim` is formatted with the call's arguments; `fn`
    returns what it proved (a string, or a (string, data) pair) or calls `fail(...)`."""

    def decorate(fn: F) -> Callable[..., CheckResult]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> CheckResult:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            what = claim.format(**bound.arguments)
            target: Target = bound.arguments["target"]
            if needs_isolation:
                isolation = target.isolation()
                if not isolation.isolated:
                    return _report(CheckResult("skipped", what, isolation.reason))
            try:
                outcome = fn(*bound.args, **bound.kwargs)
            except _Fail as f:
                raise CheckFailed(what, f.expected, f.seen, f.hint) from None
            except TargetError as exc:
                # An error that knows the fix (ssh disabled, a Cloud Controller error, ...) names it;
                # otherwise the likely cause is an app that is not there or not running.
                raise CheckFailed(what, "the platform to answer the commands this check runs", str(exc),
                                  exc.hint or "Is the app pushed and running? Look at `cf app` and "
                                  "`cf logs --recent` for it, then run this cell again.") from None
            statement, data = outcome if isinstance(outcome, tuple) else (outcome, None)
            return _report(CheckResult("passed", statement, data=data))

        run.claim = claim  # type: ignore[attr-defined]
        run.needs_isolation = needs_isolation  # type: ignore[attr-defined]
        return run

    return decorate


def _report(result: CheckResult) -> CheckResult:
    print(result.line(), flush=True)
    return result


def short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


def poll(deadline: float, probe: Callable[[], Any]) -> Any:
    """Call `probe` until it returns something truthy or `deadline` seconds pass; its last value.

    The checks' way of waiting: `poll_until` every POLL_SECONDS, where running out of time is no
    error but the (falsy) answer, for the check to word its failure."""
    try:
        return poll_until(probe, timeout=deadline, interval=POLL_SECONDS)
    except PollTimeout as timed_out:
        return timed_out.last


# The private names the check modules used before the split.
_short, _poll = short, poll
