"""Small asyncio helpers: wait on events with a timeout instead of polling loops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_any(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until any event is set or `timeout` passes; True if one was set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None once `stop` is set first (`work` is then cancelled).

    For a call to a server that may be away (a broker request waits out its whole request
    timeout when nobody answers), which must not hold up the stop of the process.
    """
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled from outside: take the work down with it
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # its cancellation done; an outer one still propagates
    if not task.cancelled():
        task.exception()  # whatever it ended with is moot now: the process is stopping
    return None
