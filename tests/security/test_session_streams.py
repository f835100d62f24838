"""A stream opened with a session ends within 20 s of that session being signed out, revoked
or expired (SPEC §7 "Browsers on other origins"); so does one opened with a revoked API
token, on every stream route; a stream whose credential is still good stays open."""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg
import httpx
import pytest

from imuflow.auth import SESSION_COOKIE, hash_token
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token
from tests.progress.sse_helpers import new_file
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
BOUND = 20.0


class Stream:
    """One SSE connection, read in the background until the server ends it."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.opened = asyncio.Event()
        self.ended_at: float | None = None
        self.status: int | None = None
        self.task = asyncio.create_task(self._read(url, headers))

    async def _read(self, url: str, headers: dict[str, str]) -> None:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=120.0)) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            self.status = response.status_code
            self.opened.set()
            async for _ in response.aiter_bytes():
                pass
        self.ended_at = time.monotonic()


async def _session(client: httpx.AsyncClient, url: str, token: str) -> str:
    response = await client.post(f"{url}/api/session", json={"token": token})
    assert response.status_code == 204, response.text
    return response.cookies[SESSION_COOKIE]


def _cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={session}"}


async def test_streams_end_within_20_s_of_their_session_ending(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=("progress",))
    base = stack.progress_url
    alice = await make_token(database_url, "alice")
    ops = await make_token(database_url, "ops", admin=True)
    keeper = await make_token(database_url, "carol")
    conn = await asyncpg.connect(database_url)
    try:
        file_id = await new_file(conn, "alice", "mine.csv")
        async with httpx.AsyncClient(timeout=30) as client:
            signed_out, revoked, expired = [await _session(client, base, alice) for _ in range(3)]
            admin = await _session(client, base, ops)
            streams = {
                "signed out (all files)": Stream(f"{base}/api/events", _cookie(signed_out)),
                "signed out (one file)": Stream(f"{base}/api/files/{file_id}/events", _cookie(signed_out)),
                "revoked session": Stream(f"{base}/api/events", _cookie(revoked)),
                "expired admin session": Stream(f"{base}/api/admin/events", _cookie(admin)),
                "session expired": Stream(f"{base}/api/files/{file_id}/events", _cookie(expired)),
                "revoked API token": Stream(f"{base}/api/events", bearer(alice)),
            }
            control = Stream(f"{base}/api/events", bearer(keeper))
            for name, stream in [*streams.items(), ("control", control)]:
                await asyncio.wait_for(stream.opened.wait(), 15)
                assert stream.status == 200, name
            await asyncio.sleep(1.0)

            ended = time.monotonic()
            assert (
                await client.delete(f"{base}/api/session", headers=_cookie(signed_out))
            ).status_code == 204
            await conn.execute(
                "UPDATE api_tokens SET revoked_at = now() WHERE token_hash = ANY($1::bytea[])",
                [hash_token(revoked), hash_token(alice)],
            )
            await conn.execute(
                "UPDATE api_tokens SET expires_at = now() WHERE token_hash = ANY($1::bytea[])",
                [hash_token(expired), hash_token(admin)],
            )
            done, _ = await asyncio.wait([s.task for s in streams.values()], timeout=BOUND + 5)
            late = [name for name, s in streams.items() if s.task not in done]
            assert not late, f"streams still open {BOUND + 5:.0f} s after their session ended: {late}"
            for name, stream in streams.items():
                stream.task.result()
                assert stream.ended_at is not None
                took = stream.ended_at - ended
                assert took <= BOUND, f"{name}: ended {took:.1f} s after its session"
            assert not control.task.done(), "a stream whose token is still good was ended"
            control.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control.task
            # The browser's reconnect is then refused, so the page asks to sign in again.
            again = await client.get(f"{base}/api/events", headers=_cookie(signed_out))
            assert again.status_code == 401
    finally:
        await conn.close()
