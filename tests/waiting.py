"""The one poll-until-true helper of the tests (for state no event announces)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    condition: Callable[[], Awaitable[T | None]], what: str, within: float = 20.0, every: float = 0.05
) -> T:
    """Return `condition()`'s first truthy value; fail naming `what` (and the last value seen)
    after `within` seconds. Polls every `every` seconds."""
    deadline = time.monotonic() + within
    while not (value := await condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s (last: {value!r})")
        await asyncio.sleep(every)
    return value  # truthy, so not None
