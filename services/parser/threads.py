"""A job's own thread for its blocking file work (open, read, decode, encode, close).

Readers block: a stalled network filesystem, a FIFO nobody writes to, a reader bug. In
the event loop's shared executor such a call pins a worker thread for ever, and a few of
them starve every job of the process (and `asyncio.run` waits for them at exit). Each job
gets one daemon thread instead; calls run in order, so a close submitted after a read
runs after it, and a job that is taken away while its thread is blocked simply stops
waiting: the thread ends once the call returns, or never, costing one idle thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[
    contextvars.Context, Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop, "asyncio.Future[Any]"
]


class JobThread:
    """Runs blocking calls one after another in a daemon thread of their own."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(*args)`; the future resolves with its result (cancelling it only stops the wait)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((contextvars.copy_context(), fn, args, loop, future))
        return future

    def close(self) -> None:
        """End the thread once the calls queued before this one have run."""
        self._calls.put(None)

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            ctx, fn, args, loop, future = call
            try:
                result = ctx.run(fn, *args)
            except StopIteration as exc:  # cannot be set on a future
                _resolve(loop, future, None, RuntimeError(f"reader raised StopIteration: {exc!r}"))
            except BaseException as exc:  # handed to the awaiting coroutine
                _resolve(loop, future, None, exc)
            else:
                _resolve(loop, future, result, None)


def _resolve(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None
) -> None:
    def settle() -> None:
        if future.done():
            return  # cancelled: nobody waits any more
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is stopping
        loop.call_soon_threadsafe(settle)
