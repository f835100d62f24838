"""Per-user limits (SPEC §7 "Limits and fairness"): SSE streams (counted across every stream
route) and concurrent exports answer 429 with Retry-After beyond the limit and are released
when the client goes; exports draw from their own bounded pool, so the API keeps working
while every export connection is taken."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token
from tests.progress.sse_helpers import new_file
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
ROWS = 400_000  # ~20 MB of CSV: more than the sockets buffer, so an unread export stays open


@contextlib.asynccontextmanager
async def _held(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[httpx.Response]:
    """A streamed GET whose body is read only a little, held open until the block ends."""
    async with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 200:
            # The first bytes: the response has started, so the server holds its slot. The
            # iterator is kept (a collected one could close the connection early).
            body = response.aiter_raw()
            await anext(body)
            yield response
        else:
            await response.aread()
            yield response


async def _until_ok(call: Callable[[], Awaitable[int]], what: str) -> None:
    """Retry `call` until it answers 200: a slot comes back once the server sees the disconnect."""

    async def answered_ok() -> bool:
        status = await call()
        assert status in (200, 429), (what, status)
        return status == 200

    await until(answered_ok, f"{what}: the slot was released", within=10, every=0.2)


def _assert_too_many(response: httpx.Response) -> None:
    assert response.status_code == 429, f"expected 429, got {response.status_code}"
    assert int(response.headers["retry-after"]) >= 1
    assert "at once" in response.json()["detail"]


async def test_streams_per_user_are_limited_across_routes_and_released(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, {"IMUFLOW_MAX_STREAMS_PER_USER": "3"}, services=("progress",))
    alice = await make_token(database_url, "alice")
    bob = await make_token(database_url, "bob")
    conn = await asyncpg.connect(database_url)
    try:
        file_id = await new_file(conn, "alice", "a.csv")
    finally:
        await conn.close()
    events = f"{stack.progress_url}/api/events"
    one = f"{stack.progress_url}/api/files/{file_id}/events"
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client:
        async with (
            _held(client, events, bearer(alice)) as a,
            _held(client, one, bearer(alice)) as b,
            _held(client, events, bearer(alice)) as c,
        ):
            assert [a.status_code, b.status_code, c.status_code] == [200, 200, 200]
            for url in (events, one):
                async with _held(client, url, bearer(alice)) as over:
                    _assert_too_many(over)
            async with _held(client, events, bearer(bob)) as other:
                assert other.status_code == 200, "another user's limit is their own"

        async def open_one() -> int:
            async with _held(client, one, bearer(alice)) as r:
                return r.status_code

        await _until_ok(open_one, "a stream after the others closed")
        # Every slot came back: the full limit is available again.
        async with (
            _held(client, events, bearer(alice)) as a,
            _held(client, one, bearer(alice)) as b,
            _held(client, events, bearer(alice)) as c,
        ):
            assert [a.status_code, b.status_code, c.status_code] == [200, 200, 200]


async def _big_file(conn: asyncpg.Connection, user: str) -> str:
    file_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, status,"
        " units, samples_processed, sample_count, sample_count_exact) SELECT $1, id, $3, 1, md5($3),"
        ' \'file:///nonexistent\', \'completed\', \'{"ax": "m/s^2", "ay": "m/s^2", "az": "m/s^2"}\','
        " $2, $2, true FROM users WHERE name = $4",
        file_id,
        ROWS,
        f"{user}.csv",
        user,
    )
    await conn.execute(
        "INSERT INTO imu_samples (file_id, sample_index, t_ns, ax, ay, az)"
        " SELECT $1, g, 1700000000000000000 + g * 10000000, sin(g)::real, cos(g)::real, 9.81"
        " FROM generate_series(0::bigint, $2::bigint - 1) g",
        file_id,
        ROWS,
    )
    return str(file_id)


async def test_exports_are_limited_per_user_and_use_their_own_pool(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    env = {"IMUFLOW_MAX_CONCURRENT_EXPORTS": "2", "IMUFLOW_EXPORT_POOL_SIZE": "3"}
    stack = await service_stack(test_settings, env, services=("progress",))
    alice = await make_token(database_url, "alice")
    bob = await make_token(database_url, "bob")
    conn = await asyncpg.connect(database_url)
    try:
        mine, theirs = await _big_file(conn, "alice"), await _big_file(conn, "bob")
    finally:
        await conn.close()
    mine_url = f"{stack.progress_url}/api/files/{mine}/samples"
    theirs_url = f"{stack.progress_url}/api/files/{theirs}/samples"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=60)) as client:
        async with (
            _held(client, mine_url, bearer(alice)) as csv,
            _held(client, f"{mine_url}?as=parquet", bearer(alice)) as parquet,
        ):
            assert (csv.status_code, parquet.status_code) == (200, 200)
            async with _held(client, mine_url, bearer(alice)) as over:
                _assert_too_many(over)
            async with _held(client, theirs_url, bearer(bob)) as third:
                assert third.status_code == 200, "another user's exports are their own"
                # All three connections of the export pool are taken: a fourth export waits
                # (bounded), then says so; the rest of the API is untouched.
                started = time.monotonic()
                listed = await client.get(f"{stack.progress_url}/api/files", headers=bearer(alice))
                assert listed.status_code == 200 and time.monotonic() - started < 2
                async with _held(client, f"{theirs_url}?as=parquet", bearer(bob)) as busy:
                    assert busy.status_code == 503, busy.text
                    assert int(busy.headers["retry-after"]) >= 1

        async def export_one() -> int:
            async with _held(client, mine_url, bearer(alice)) as r:
                return r.status_code

        await _until_ok(export_one, "an export after the others were dropped")
        # Dropped downloads gave their slots and connections back: a whole export still works.
        whole = await client.get(mine_url, headers=bearer(alice), params={"as": "csv"})
        assert whole.status_code == 200 and whole.text.count("\n") == ROWS + 1
