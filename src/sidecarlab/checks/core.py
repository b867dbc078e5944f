"""The check core: each check proves one claim of the tutorial on any target.

A check shows exactly one line: `✔ <what was proven>`, or `⊘ skipped: <claim> (<why>)` when the
target cannot show it (a claim about container isolation on a platform without containers is
never reported as passed). Otherwise it raises `CheckFailed` with what was expected, what was seen
and a hint (its message starts with `✘`): the learner's feedback in the notebook, and CI's failure
message.

The marks are spelled once, here (`PASSED_MARK`, `SKIPPED_MARK`, `FAILED_MARK`), and are glyphs the
fonts every desktop has draw (DejaVu Sans and DejaVu Sans Mono, Debian's default fonts, have all
three): no colour-emoji font is needed. In a notebook the line is also not the only signal: in a
Jupyter kernel a check publishes its result as a display with two forms, `text/plain` (the line,
what papermill, the regression and a terminal see) and `text/html` (a coloured PASS or SKIP badge
before the same text, what JupyterLab shows). Outside a kernel the line is printed. A failure
shows as the notebook's error output (`CheckFailed: ✘ ...`, on JupyterLab's error background).
"""

from __future__ import annotations

import functools
import html
import inspect
import sys
from collections.abc import Callable, Mapping
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
    "badge_html",
    "check",
    "fail",
    "output_text",
    "poll",
    "short",
]

# U+2714 HEAVY CHECK MARK, U+2298 CIRCLED DIVISION SLASH, U+2718 HEAVY BALLOT X: one code point
# each, in DejaVu Sans (Mono); no emoji presentation is asked for
PASSED_MARK = "\u2714"
SKIPPED_MARK = "\u2298"
FAILED_MARK = "\u2718"

# The badge of each outcome in the HTML form: its word and its colour (white text on it, readable on
# light and dark themes alike)
_BADGES = {"passed": ("PASS", "#1a7f37"), "skipped": ("SKIP", "#6e7781")}

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
        """The one line the check shows, starting with its mark."""
        if self.status == "passed":
            return f"{PASSED_MARK} {self.statement}"
        return f"{SKIPPED_MARK} skipped: {self.statement} ({self.reason})"

    def __repr__(self) -> str:
        return self.line()

    def _repr_html_(self) -> str:
        """A coloured PASS/SKIP badge, then the line: it reads without the mark's glyph."""
        return badge_html(self.status, self.line())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.line(), "text/html": self._repr_html_()}

    def show(self) -> CheckResult:
        """Show the result once, as it is made: a display (plain line and HTML badge) in a Jupyter
        kernel, else the line on stdout. Returns the result."""
        if _in_kernel():
            from IPython.display import publish_display_data

            sys.stdout.flush()  # what the check printed before comes before its result
            publish_display_data(self._repr_mimebundle_())
        else:
            print(self.line(), flush=True)
        return self

    def _ipython_display_(self) -> None:
        # The check showed its result when it ran (`show`); a check call as a cell's last expression
        # should not show it twice.
        pass


def badge_html(status: str, line: str) -> str:
    """`line` (a check's line, its mark first) as HTML after a badge for `status` (passed or
    skipped): the word in white on the status's colour, the text in the notebook's code font."""
    word, colour = _BADGES[status]
    badge = (f'<span class="sidecarlab-badge" style="display: inline-block; padding: 0 0.5em; '
             f'margin-right: 0.5em; border-radius: 3px; background-color: {colour}; color: #ffffff; '
             f'font-weight: bold; font-family: sans-serif;">{word}</span>')
    mark, _, text = line.partition(" ")
    return (f'<div class="sidecarlab-check sidecarlab-check-{status}" style="font-family: '
            f'var(--jp-code-font-family, monospace); white-space: pre-wrap;">{badge}'
            f'<span class="sidecarlab-mark" style="color: {colour};">{html.escape(mark, quote=False)}</span> '
            f'{html.escape(text, quote=False)}</div>')


def output_text(output: Mapping[str, Any]) -> str:
    """The plain text of one notebook output (nbformat's JSON): a stream's text, a display's or a
    result's `text/plain`; "" for others (errors, images). Check lines are read from this."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
    elif kind in ("display_data", "execute_result"):
        text = output.get("data", {}).get("text/plain", "")
    else:
        return ""
    return "".join(text) if isinstance(text, list) else str(text)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, papermill), where displays reach the notebook."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


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
    return result.show()


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
