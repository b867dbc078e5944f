"""`poll_until`, the one way each package waits: the kit's (sidecarlab.polling) and localcf's, which
have the same shape. The clock is a fake one where the test is about when checks happen, so nothing
here depends on how fast the machine is."""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Iterator

import pytest

import localcf.polling
import sidecarlab.polling
from sidecarlab.checks import core
from sidecarlab.polling import poll_until

BOTH = pytest.mark.parametrize("module", [sidecarlab.polling, localcf.polling], ids=["sidecarlab", "localcf"])


class FakeClock:
    """Stands in for the `time` module of a polling module: sleeping only moves the clock on."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"slept a negative time: {seconds}"
        self.pauses.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    for module in (sidecarlab.polling, localcf.polling):
        monkeypatch.setattr(module, "time", fake)
    return fake


def _true_from(clock: FakeClock, at: float, log: list[float] | None = None) -> Callable[[], str | None]:
    """A check that comes true `at` seconds after the clock's start (logging when it was asked)."""
    start = clock.now

    def check() -> str | None:
        if log is not None:
            log.append(round(clock.now - start, 6))
        return "ready" if clock.now - start >= at else None

    return check


@BOTH
def test_returns_the_first_truthy_value_and_stops_asking(module: types.ModuleType) -> None:
    answers: Iterator[object] = iter([None, 0, "", [], "it"])
    asked = []

    def check() -> object:
        asked.append(1)
        return next(answers)

    assert module.poll_until(check, timeout=5, interval=0.001) == "it"
    assert len(asked) == 5


@BOTH
def test_asks_every_interval_and_once_more_exactly_at_the_deadline(module: types.ModuleType,
                                                                   clock: FakeClock) -> None:
    asked: list[float] = []
    # true at 1.0 s, the deadline: seen by the final check, though 0.3 does not divide 1.0
    assert module.poll_until(_true_from(clock, 1.0, asked), timeout=1.0, interval=0.3) == "ready"
    assert asked == [0.0, 0.3, 0.6, 0.9, 1.0]
    assert clock.pauses == pytest.approx([0.3, 0.3, 0.3, 0.1])


@BOTH
def test_gives_up_after_the_deadline_with_poll_timeout_and_the_last_answer(module: types.ModuleType,
                                                                           clock: FakeClock) -> None:
    asked: list[float] = []

    def never() -> int:
        asked.append(clock.now)
        return 0

    with pytest.raises(module.PollTimeout) as e:
        module.poll_until(never, timeout=2, interval=0.5, what="the answer")
    assert str(e.value) == "the answer did not happen within 2 s"
    assert e.value.last == 0 and e.value.what == "the answer" and e.value.timeout == 2
    assert isinstance(e.value, TimeoutError)
    assert [t - asked[0] for t in asked] == [0.0, 0.5, 1.0, 1.5, 2.0]


@BOTH
def test_gives_up_with_the_error_the_caller_words(module: types.ModuleType, clock: FakeClock) -> None:
    class NotUp(Exception):
        pass

    with pytest.raises(NotUp, match="did not come up within 3s") as e:
        module.poll_until(lambda: None, timeout=3, interval=1, on_timeout=lambda: NotUp("did not come up within 3s"))
    # raised as the caller's own error, not chained to anything of the wait
    assert e.value.__context__ is None and e.value.__cause__ is None
    assert sum(clock.pauses) == pytest.approx(3)


@BOTH
def test_a_check_that_raises_ends_the_wait_with_its_error(module: types.ModuleType, clock: FakeClock) -> None:
    asked = []

    def exited() -> None:
        asked.append(1)
        if len(asked) == 3:
            raise RuntimeError("exited with status 1 while starting")

    with pytest.raises(RuntimeError, match="exited with status 1"):
        module.poll_until(exited, timeout=60, interval=1)
    assert len(asked) == 3 and clock.pauses == [1, 1]


@BOTH
def test_a_deadline_of_zero_or_already_past_makes_one_check(module: types.ModuleType, clock: FakeClock) -> None:
    asked: list[float] = []
    for timeout in (0, 0.0, -5):
        with pytest.raises(module.PollTimeout):
            module.poll_until(lambda: asked.append(clock.now), timeout=timeout, interval=1)
    assert asked == [clock.now] * 3
    assert clock.pauses == []
    assert module.poll_until(lambda: "now", timeout=0) == "now"


@BOTH
def test_no_timeout_waits_as_long_as_it_takes(module: types.ModuleType, clock: FakeClock) -> None:
    assert module.poll_until(_true_from(clock, 7200), timeout=None, interval=60) == "ready"
    assert clock.pauses == [60] * 120


@BOTH
def test_waits_in_real_time_for_something_another_thread_does(module: types.ModuleType) -> None:
    done = threading.Event()
    threading.Timer(0.05, done.set).start()
    assert module.poll_until(done.is_set, timeout=30, interval=0.01) is True


def test_the_kit_refuses_a_negative_interval() -> None:
    with pytest.raises(ValueError, match="interval must be 0 or more seconds, not -1"):
        poll_until(lambda: None, timeout=1, interval=-1)


def test_localcf_backs_off_by_the_factor_up_to_the_cap(clock: FakeClock) -> None:
    asked: list[float] = []
    with pytest.raises(localcf.polling.PollTimeout):
        localcf.polling.poll_until(_true_from(clock, 99, asked), timeout=1.0, interval=0.02,
                                   backoff=1.5, max_interval=0.2)
    grown = [0.02, 0.03, 0.045, 0.0675, 0.10125, 0.151875, 0.2, 0.2]
    assert clock.pauses[:8] == pytest.approx(grown)
    # the pauses then stay at the cap until the last, cut to end at the deadline
    assert all(p == pytest.approx(0.2) for p in clock.pauses[8:-1]) and clock.pauses[-1] <= 0.2
    assert asked[-1] == pytest.approx(1.0) and sum(clock.pauses) == pytest.approx(1.0)


def test_localcf_without_backoff_keeps_its_interval(clock: FakeClock) -> None:
    with pytest.raises(localcf.polling.PollTimeout):
        localcf.polling.poll_until(lambda: None, timeout=1, interval=0.25)
    assert clock.pauses == [0.25] * 4


def test_the_checks_poll_answers_the_last_value_instead_of_raising(clock: FakeClock) -> None:
    assert core.poll(3, _true_from(clock, 2)) == "ready"
    assert core.poll(3, lambda: []) == []
    start = clock.now
    assert core.poll(3, lambda: None) is None
    assert clock.now - start == pytest.approx(3) and max(clock.pauses) == core.POLL_SECONDS
