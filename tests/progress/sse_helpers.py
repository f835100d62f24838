"""Helpers for the SSE tests: files and events made straight in Postgres, bounded stream reads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import asyncpg
import httpx
from httpx_sse import aconnect_sse

from tests.e2e.helpers import Event

NEW_FILE = (
    "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, status)"
    " SELECT $1, id, $3, 1, md5($3), 'file:///nonexistent', 'queued' FROM users WHERE name = $2"
)


async def new_file(conn: asyncpg.Connection, user: str, name: str) -> str:
    """A queued file of `user` (made in SQL, no upload) with its first event; its id."""
    file_id = uuid.uuid4()
    await conn.execute(NEW_FILE, file_id, user, name)
    await conn.fetchval("SELECT record_file_event($1)", file_id)
    return str(file_id)


async def progress(conn: asyncpg.Connection, file_id: str, samples: int) -> int:
    """Move a file to `parsing` at `samples` and record the event; its id."""
    await conn.execute(
        "UPDATE imu_data_files SET status = 'parsing', samples_processed = $2::bigint,"
        " sample_count = 1000000, percent = $2::bigint / 10000.0, batch_number = batch_number + 1"
        " WHERE id = $1::uuid",
        file_id,
        samples,
    )
    event_id: int = await conn.fetchval("SELECT record_file_event($1::uuid)", file_id)
    return event_id


async def finish(conn: asyncpg.Connection, file_id: str, status: str) -> int:
    """End a file (`completed`, `failed`, `cancelled`) and record the event; its id."""
    await conn.execute(
        "UPDATE imu_data_files SET status = $2, completed_at = now(),"
        " error_message = CASE WHEN $2 = 'failed' THEN 'broken' END WHERE id = $1::uuid",
        file_id,
        status,
    )
    event_id: int = await conn.fetchval("SELECT record_file_event($1::uuid)", file_id)
    return event_id


async def read_events(
    url: str,
    headers: dict[str, str],
    *,
    count: int | None = None,
    seconds: float = 3.0,
) -> list[Event]:
    """The events a stream sends within `seconds` (or its first `count`), then disconnect."""
    got: list[Event] = []

    async def read() -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=seconds + 10)) as client,
            aconnect_sse(client, "GET", url, headers=headers) as source,
        ):
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if not sse.data:  # a keep-alive comment (see tests/e2e/helpers.py `events`)
                    continue
                got.append(Event(sse.event, sse.id, json.loads(sse.data)))
                if count is not None and len(got) >= count:
                    return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), seconds)
    return got


def record_ids(events: list[Event]) -> list[str]:
    """The file ids of the events, in order."""
    return [str(e.record["id"]) for e in events]


def as_int(events: list[Event]) -> list[int]:
    """The event ids as integers."""
    return [int(e.id) for e in events]


def summary(events: list[Event]) -> list[tuple[str, str, Any]]:
    """(file id, type, samples_processed) of each event, for readable assertion messages."""
    return [(str(e.record["id"]), e.type, e.record["samples_processed"]) for e in events]
