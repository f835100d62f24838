"""Per-user limits of the progress service: concurrent exports and concurrent SSE streams.

A slot is taken before the response starts (so the refusal can be a `429` with
`Retry-After`) and given back when the response ends, however it ends: the responses below
release in a `finally` around the whole ASGI call, after closing their body generator (a
generator left suspended at a `yield` would otherwise run its cleanup only when collected,
after its connection went back to the pool). State lives in this process: with several
replicas each enforces the limits on its own share, like ingest's upload limits.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any
from uuid import UUID

from fastapi import HTTPException
from sse_starlette import EventSourceResponse
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

Release = Callable[[], Awaitable[None]]


class UserSlots:
    """At most `limit` things at once per user: `take` (or 429), then `give_back` once."""

    def __init__(self, limit: int, what: str, retry_after: int) -> None:
        self.limit = limit
        self.what = what
        self.retry_after = retry_after
        self.active: dict[UUID, int] = {}

    def take(self, user_id: UUID) -> None:
        """Take one slot, or raise the 429 that says how long to wait."""
        held = self.active.get(user_id, 0)
        if held >= self.limit:
            raise HTTPException(
                429,
                f"at most {self.limit} {self.what} at once per user; close one or try again shortly",
                {"Retry-After": str(self.retry_after)},
            )
        self.active[user_id] = held + 1

    def give_back(self, user_id: UUID) -> None:
        """Return a slot taken by `take` (idempotence is the caller's: call it once)."""
        held = self.active.get(user_id, 0) - 1
        if held > 0:
            self.active[user_id] = held
        else:
            self.active.pop(user_id, None)


async def _close(body: AsyncGenerator[Any, None], release: Release) -> None:
    try:
        with contextlib.suppress(RuntimeError):  # "already running": a cancelled consumer
            await body.aclose()
    finally:
        await release()


class ReleasingEventSource(EventSourceResponse):
    """An SSE response that closes its generator and releases what it held when it ends."""

    def __init__(self, body: AsyncGenerator[Any, None], release: Release, **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self._body, self._release = body, release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await _close(self._body, self._release)


class ReleasingStream(StreamingResponse):
    """A streamed download that closes its generator and releases what it held when it ends."""

    def __init__(self, body: AsyncGenerator[bytes, None], release: Release, **kwargs: Any) -> None:
        super().__init__(body, **kwargs)
        self._body, self._release = body, release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await _close(self._body, self._release)
