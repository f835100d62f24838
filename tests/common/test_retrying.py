"""The retry policies (imuflow/retrying.py), with time faked: every delay is recorded, none slept."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from tenacity import Retrying

from imuflow import retrying


class Clock:
    """A sleep that records what it was asked for and returns at once."""

    def __init__(self, stop: asyncio.Event | None = None, stop_after: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop, self.stop_after = stop, stop_after

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.stop is not None and len(self.delays) == self.stop_after:
            self.stop.set()
            raise retrying.Stopped


class Flaky:
    """Fails `times` times with `error`, then returns "done"."""

    def __init__(self, times: int, error: Exception) -> None:
        self.calls, self.times, self.error = 0, times, error

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error
        return "done"


async def test_until_stopped_backs_off_with_jitter_to_its_ceiling() -> None:
    clock = Clock()
    flaky = Flaky(8, ConnectionError("away"))
    policy = retrying.until_stopped(
        asyncio.Event(),
        "test",
        transient=retrying.of_type(OSError),
        initial=0.2,
        maximum=2.0,
        sleep=clock.sleep,
    )
    assert await policy(flaky) == "done"
    assert flaky.calls == 9 and len(clock.delays) == 8
    assert all(0 < d <= 2.0 for d in clock.delays)
    assert clock.delays[0] < 0.5 and max(clock.delays) > 1.0  # it grew


async def test_an_error_not_named_transient_is_raised_at_once() -> None:
    clock = Clock()
    flaky = Flaky(1, ValueError("poison"))
    policy = retrying.until_stopped(
        asyncio.Event(), "test", transient=retrying.of_type(OSError), sleep=clock.sleep
    )
    with pytest.raises(ValueError, match="poison"):
        await policy(flaky)
    assert flaky.calls == 1 and clock.delays == []


async def test_a_stop_during_a_wait_makes_no_further_attempt() -> None:
    stop = asyncio.Event()
    clock = Clock(stop, stop_after=3)
    flaky = Flaky(100, ConnectionError("away"))
    policy = retrying.until_stopped(stop, "test", transient=retrying.of_type(OSError), sleep=clock.sleep)
    with pytest.raises(retrying.Stopped):
        await policy(flaky)
    assert flaky.calls == 3


async def test_the_real_sleep_is_interrupted_by_the_stop_event() -> None:
    stop = asyncio.Event()
    policy = retrying.until_stopped(stop, "test", transient=retrying.of_type(OSError), initial=30, maximum=60)
    asyncio.get_running_loop().call_later(0.05, stop.set)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(retrying.Stopped):
        await policy(Flaky(100, ConnectionError("away")))
    assert loop.time() - started < 5


async def test_bounded_gives_up_after_its_attempts_with_the_last_error() -> None:
    clock = Clock()
    flaky = Flaky(10, ConnectionError("still away"))
    policy = retrying.bounded("test", transient=retrying.of_type(OSError), attempts=3, sleep=clock.sleep)
    with pytest.raises(ConnectionError, match="still away"):
        await policy(flaky)
    assert flaky.calls == 3 and len(clock.delays) == 2


async def test_while_result_calls_again_until_the_outcome_is_final() -> None:
    clock = Clock()
    outcomes = iter(["retry", "retry", "done"])

    async def attempt() -> str:
        return next(outcomes)

    policy = retrying.while_result(
        lambda o: o == "retry", asyncio.Event(), "test", initial=1.0, maximum=30.0, sleep=clock.sleep
    )
    assert await policy(attempt) == "done"
    assert len(clock.delays) == 2


class Refused(Exception):
    """A retryable answer that may say how long to wait (Retry-After)."""

    def __init__(self, after: float | None = None) -> None:
        super().__init__(f"refused, retry after {after}")
        self.after = after


def _patiently(within: float, sleep: Callable[[float], None]) -> Retrying:
    return retrying.patiently(
        "uploading",
        transient=retrying.of_type(Refused),
        within=within,
        initial=0.05,
        maximum=0.2,
        asked=lambda exc: exc.after if isinstance(exc, Refused) else None,
        sleep=sleep,
    )


def test_patiently_waits_at_least_what_the_server_asked() -> None:
    delays: list[float] = []
    errors = [Refused(after=3.0), Refused(), Refused()]

    def step() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    for attempt in _patiently(within=60, sleep=delays.append):
        with attempt:
            result = step()
    assert result == "done"
    assert len(delays) == 3
    assert delays[0] >= 3.0  # Retry-After beats the 0.05 s backoff
    assert all(0.0 < d <= 0.2 + 0.05 for d in delays[1:])  # then backoff, jitter, ceiling


def test_patiently_gives_up_after_its_seconds_with_the_last_error() -> None:
    calls = 0

    def step() -> None:
        nonlocal calls
        calls += 1
        raise Refused()

    started = time.monotonic()
    with pytest.raises(Refused):
        for attempt in _patiently(within=0.3, sleep=time.sleep):
            with attempt:
                step()
    assert calls >= 2
    assert time.monotonic() - started < 2.0


def test_patiently_raises_an_error_not_named_transient_at_once() -> None:
    calls = 0
    with pytest.raises(KeyError):
        for attempt in _patiently(within=60, sleep=time.sleep):
            with attempt:
                calls += 1
                raise KeyError("poison")
    assert calls == 1
