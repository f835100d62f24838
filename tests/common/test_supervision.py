"""The one stop path (imuflow/supervision.py, imuflow/aio.py): a task that dies sets the
stop event every task shares and calls the failure callback; a stop waits the grace, then
cancels; a call to a server that does not answer is given up when the stop comes."""

from __future__ import annotations

import asyncio
import time

import pytest

from imuflow import supervision
from imuflow.aio import unless_stopped
from imuflow.supervision import TaskSupervisor


async def test_a_task_that_dies_stops_the_others_and_calls_the_callback_once() -> None:
    stop = asyncio.Event()
    failures: list[str] = []
    supervisor = TaskSupervisor("svc", stop, grace=1.0, on_failure=lambda: failures.append("called"))
    stopped: list[str] = []

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()
        stopped.append("steady")

    async def dies(stop: asyncio.Event) -> None:
        raise RuntimeError("boom")

    supervisor.start("steady", steady)
    supervisor.start("dies", dies)
    await asyncio.wait_for(stop.wait(), 1)  # the same event the service waits on
    await supervisor.stop()
    assert failures == ["called"]
    assert isinstance(supervisor.failure, RuntimeError) and str(supervisor.failure) == "boom"
    assert stopped == ["steady"]


async def test_tasks_ended_by_the_stop_are_no_failure() -> None:
    stop = asyncio.Event()
    supervisor = TaskSupervisor("svc", stop, grace=1.0, on_failure=lambda: pytest.fail("not a failure"))

    async def steady(stop: asyncio.Event) -> None:
        await stop.wait()

    supervisor.start("a", steady)
    supervisor.start("b", steady)
    await supervisor.stop()
    assert supervisor.failure is None


async def test_a_task_that_ignores_the_stop_is_cancelled_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervision, "CLOSE_SECONDS", 0.1)
    cancelled = asyncio.Event()

    async def stubborn(stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor = TaskSupervisor("svc", asyncio.Event(), grace=0.2)
    supervisor.start("stubborn", stubborn)
    began = time.monotonic()
    await supervisor.stop()
    assert cancelled.is_set()
    assert 0.25 <= time.monotonic() - began < 2.0  # grace + CLOSE_SECONDS, not the sleep


async def test_unless_stopped_gives_a_hung_call_up_at_the_stop() -> None:
    stop = asyncio.Event()
    assert await unless_stopped(stop, asyncio.sleep(0, result=7)) == 7

    cancelled = asyncio.Event()

    async def hung() -> int:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1

    asyncio.get_running_loop().call_later(0.05, stop.set)
    began = time.monotonic()
    assert await unless_stopped(stop, hung()) is None
    assert cancelled.is_set() and time.monotonic() - began < 1.0


async def test_unless_stopped_passes_errors_and_outer_cancellation_on() -> None:
    stop = asyncio.Event()

    async def fails() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await unless_stopped(stop, fails())

    inner_cancelled = asyncio.Event()

    async def hung() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            inner_cancelled.set()
            raise

    outer = asyncio.create_task(unless_stopped(stop, hung()))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.sleep(0)
    assert inner_cancelled.is_set()
