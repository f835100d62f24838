"""Dead letters of the outbox: list them, count them, replay one (SPEC §7).

The relay (imuflow/outbox.py) sets a row aside when it can never be published. An operator
lists them (`GET /api/admin/dead-letters`, `imuflow dead-letters`) and replays one once
the cause is gone (a larger broker limit, a fixed topic): the row is pending again, and a
file that failed because of it goes back to `uploaded` until the event is on Kafka.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from contracts import topics
from imuflow import db

QUERIES = db.load_queries(Path(__file__).parent / "sql" / "outbox.sql")


async def list_dead(pool: asyncpg.Pool, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
    """Dead letters, newest first (ids below `before` when given)."""
    return [dict(r) for r in await pool.fetch(QUERIES["list_dead"], limit, before)]


async def count_dead(pool: asyncpg.Pool) -> int:
    """How many rows are dead letters now."""
    return int(await pool.fetchval(QUERIES["count_dead"]))


async def replay(pool: asyncpg.Pool, outbox_id: int) -> dict[str, Any] | None:
    """Make a dead letter pending again; None if there is no such dead letter."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(QUERIES["lock_dead"], outbox_id)
        if row is None:
            return None
        await conn.execute(QUERIES["replay_dead"], outbox_id)
        requeued: UUID | None = None
        if row["failed_file"] and row["topic"] == topics.FILES:
            back = await conn.fetchrow(QUERIES["requeue_dead_file"], UUID(row["key"]))
            requeued = back["file_id"] if back else None
        await conn.execute(QUERIES["wake_relays"])
    return {"id": outbox_id, "requeued_file": requeued}
