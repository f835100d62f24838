"""Work that follows a Postgres NOTIFY channel: woken by it, polling as a fallback.

The outbox relay (channel `imuflow_outbox`) and the progress service's event fan-out
(`imuflow_file_events`) both do their work when a transaction announces new rows, and both
must go on when the listening connection is lost (Postgres restarted, a network blip): then
they poll every few seconds and LISTEN again on the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from imuflow import db
from imuflow.aio import wait_any

log = logging.getLogger(__name__)


async def follow(
    database_url: str,
    channel: str,
    work: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    *,
    poll_seconds: float,
    what: str,
) -> None:
    """Run `work` at once, then on every NOTIFY on `channel` and at least every
    `poll_seconds`, until `stop` is set. `what` names the caller in the logs.

    A NOTIFY that comes while `work` runs starts the next round at once (the wake-up is
    cleared before the round, not after), so no row waits for the poll.
    """
    wake = asyncio.Event()
    listener: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            if listener is None or listener.is_closed():
                listener = await _listen(database_url, channel, wake, what)
            wake.clear()
            await work()
            await wait_any(stop, wake, timeout=poll_seconds)
    finally:
        if listener is not None and not listener.is_closed():
            await listener.close()


async def _listen(
    database_url: str, channel: str, wake: asyncio.Event, what: str
) -> asyncpg.Connection | None:
    """A connection that sets `wake` on every NOTIFY on `channel`; None (logged) if Postgres
    cannot be reached now, in which case the caller polls and tries again next round."""
    try:
        conn = await db.connect(database_url)
        await conn.add_listener(channel, lambda *_: wake.set())
        return conn
    except (db.DatabaseError, OSError, asyncpg.PostgresError) as exc:
        log.warning("%s: cannot LISTEN, polling instead: %s", what, exc)
        return None
