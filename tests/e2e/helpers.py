"""Helpers for end-to-end tests: tokens, uploads and reading SSE streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from imuflow import auth, db
from tests.waiting import until

DATA = Path(__file__).resolve().parent.parent / "data"
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass(frozen=True)
class Event:
    """One SSE event as a test sees it."""

    type: str
    id: str
    record: dict[str, Any]


async def make_token(database_url: str, user: str, *, admin: bool = False) -> str:
    """A fresh token for `user` (created if needed)."""
    conn = await db.connect(database_url)
    try:
        return await auth.create_token(conn, user, admin=admin)
    finally:
        await conn.close()


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for `token`."""
    return {"Authorization": f"Bearer {token}"}


ENDED = ("completed", "failed", "cancelled")


async def once_ended(progress_url: str, token: str, ids: list[str], within: float) -> list[dict[str, Any]]:
    """The records of `ids` (in that order), polled until every one has ended."""
    async with httpx.AsyncClient(timeout=30, headers=bearer(token), trust_env=False) as client:

        async def all_ended() -> list[dict[str, Any]] | None:
            records = [(await client.get(f"{progress_url}/api/files/{i}")).json() for i in ids]
            return records if all(r["status"] in ENDED for r in records) else None

        return await until(all_ended, f"all of {len(ids)} uploads ended", within=within, every=0.3)


async def upload(ingest_url: str, token: str, path: Path, **fields: str) -> httpx.Response:
    """POST a file to ingest as multipart."""
    async with httpx.AsyncClient(timeout=60) as client:
        with path.open("rb") as f:
            return await client.post(
                f"{ingest_url}/api/files", headers=bearer(token), files={"file": (path.name, f)}, data=fields
            )


async def events(
    url: str, token: str, *, last_event_id: str | None = None, timeout: float = 60.0
) -> AsyncIterator[Event]:
    """The events of an SSE stream until the connection ends."""
    headers = bearer(token)
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=timeout)) as client,
        aconnect_sse(client, "GET", url, headers=headers) as source,
    ):
        source.response.raise_for_status()
        async for sse in source.aiter_sse():
            if not sse.data:
                # A keep-alive comment (sse-starlette pings every IMUFLOW_SSE_PING_SECONDS):
                # httpx-sse 0.4 keeps the last id across events and so reports the blank line
                # after a comment as an event with no data. Not an event of ours.
                continue
            yield Event(sse.event, sse.id, json.loads(sse.data))


async def follow_until_done(url: str, token: str, **kwargs: Any) -> list[Event]:
    """Every event of a single-file stream up to and including its terminal event."""
    seen: list[Event] = []
    async for event in events(url, token, **kwargs):
        seen.append(event)
        if event.record["status"] in TERMINAL:
            break
    return seen
