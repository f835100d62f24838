"""Processing that overlaps the upload: a large body is recorded and parsed while it streams.

Real ingest, parser and progress processes; the body is sent slowly by a generator that
waits, halfway through, until the parser has stored samples of the file still being
uploaded (so the overlap is observed, not inferred from timings).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token
from tests.faults.helpers import kill_and_wait_restarted, wait_terminal
from tests.stack import ServiceStack, StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(120)]
BOUNDARY = "early-upload-boundary"
ROWS = 60_000
CHUNK = 64 * 1024


def _csv(rows: int = ROWS, seed: int = 0) -> bytes:
    lines = [b"time,ax,ay,az,gx,gy,gz\n"]
    lines += [b"%.2f,0.01,-0.02,%d.98,1.2,-5.6,9.0\n" % (i / 100, seed) for i in range(rows)]
    return b"".join(lines)


def _fields(fields: dict[str, str]) -> str:
    return "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )


def _head(filename: str, **fields: str) -> bytes:
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
    return (_fields(fields) + part).encode()


def _tail(after: dict[str, str]) -> bytes:
    return ("\r\n" + _fields(after) + f"--{BOUNDARY}--\r\n").encode()


async def _send(
    stack: ServiceStack,
    token: str,
    data: bytes,
    halfway: Callable[[], Awaitable[None]],
    *,
    filename: str = "walk.csv",
    chunk: int = CHUNK,
    after: dict[str, str] | None = None,
    **fields: str,
) -> httpx.Response:
    """POST `data` as the file part in chunks, awaiting `halfway()` in the middle; `fields`
    go before the file part, `after` after it."""
    head, tail = _head(filename, **fields), _tail(after or {})

    async def body() -> AsyncIterator[bytes]:
        yield head
        for start in range(0, len(data), chunk):
            if start <= len(data) // 2 < start + chunk:
                await halfway()
            yield data[start : start + chunk]
            await asyncio.sleep(0.002)
        yield tail

    headers = {
        **bearer(token),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "Content-Length": str(len(head) + len(data) + len(tail)),
    }
    async with httpx.AsyncClient(timeout=60, trust_env=False) as client:
        return await client.post(f"{stack.ingest_url}/api/files", headers=headers, content=body())


async def _receiving(conn: asyncpg.Connection, user: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT f.* FROM imu_data_files f JOIN users u ON u.id = f.user_id"
        " WHERE u.name = $1 AND f.upload_receiving",
        user,
    )
    return dict(row) if row is not None else None


async def _parsed_while_receiving(conn: asyncpg.Connection, user: str) -> dict[str, Any]:
    """The receiving record once the parser stored samples of it (the upload still streams)."""

    async def parsed() -> dict[str, Any] | None:
        row = await _receiving(conn, user)
        if row is None:
            return None
        stored = await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", row["id"])
        return row | {"stored": stored} if stored else None

    return await until(parsed, "samples stored while the upload streams", within=60, every=0.05)


@pytest.fixture
async def stack(test_settings: Settings, service_stack: StartStack) -> ServiceStack:
    return await service_stack(
        test_settings,
        env={
            "IMUFLOW_OVERLAP_MIN_BYTES": "50000",  # the .cwa below is 75 KB
            "IMUFLOW_BATCH_SIZE": "2000",
            "IMUFLOW_ADAPTIVE_BATCHING": "false",
        },
    )


async def test_parsed_while_it_streams_with_exact_final_count(stack: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    data = _csv()
    conn = await asyncpg.connect(database_url)
    seen: dict[str, Any] = {}
    events: list[Any] = []

    async def halfway() -> None:
        seen.update(await _parsed_while_receiving(conn, "alice"))
        url = f"{stack.progress_url}/api/files/{seen['id']}/events"
        follow = asyncio.create_task(follow_until_done(url, token), name="follow")
        follow.add_done_callback(lambda t: events.extend(t.result()) if not t.cancelled() else None)
        seen["follow"] = follow
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            seen["live"] = (
                await client.get(f"{stack.progress_url}/api/files/{seen['id']}", headers=bearer(token))
            ).json()

    try:
        response = await _send(stack, token, data, halfway, timezone="UTC")
        assert response.status_code == 202, response.text
        record = response.json()
        assert record["id"] == str(seen["id"])
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size_bytes"] == len(data)
        # While it streamed: queued at its first bytes, parsing with an estimated count.
        live = seen["live"]
        assert live["status"] == "parsing" and live["sha256"] == "", live
        assert live["sample_count_exact"] is False and live["size_bytes"] >= len(data)
        await asyncio.wait_for(seen["follow"], 60)
        final = events[-1]
        assert final.type == "completed", final.record
        assert final.record["samples_processed"] == ROWS and final.record["sample_count_exact"] is True
        percents = [e.record["percent"] for e in events]
        assert percents == sorted(percents), "percent went backwards"
        stored = await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", seen["id"])
        assert stored == ROWS
        assert not await conn.fetchval(
            "SELECT upload_receiving FROM imu_data_files WHERE id = $1", seen["id"]
        )
    finally:
        await conn.close()


async def test_duplicate_of_a_partly_parsed_upload_leaves_nothing(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "bob")
    data = _csv(seed=1)
    conn = await asyncpg.connect(database_url)

    async def nothing() -> None:
        return None

    try:
        first = await _send(stack, token, data, nothing)
        assert first.status_code == 202, first.text
        speculative: dict[str, Any] = {}

        async def halfway() -> None:
            speculative.update(await _parsed_while_receiving(conn, "bob"))

        again = await _send(stack, token, data, halfway)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        gone = speculative["id"]
        for table in ("imu_samples", "streaming_processing_logs", "imu_preview_blocks", "file_events"):
            count = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE file_id = $1", gone)
            assert count == 0, table
        assert await conn.fetchval("SELECT count(*) FROM imu_data_files WHERE id = $1", gone) == 0
        _assert_no_bytes(stack, str(gone))
        # The parser's fenced speculative job does not write anything later either.
        await asyncio.sleep(1.0)
        assert await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", gone) == 0
    finally:
        await conn.close()


async def test_client_gone_mid_upload_fails_the_record_without_samples(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "carol")
    conn = await asyncpg.connect(database_url)
    speculative: dict[str, Any] = {}

    class Gone(Exception):
        pass

    async def halfway() -> None:
        speculative.update(await _parsed_while_receiving(conn, "carol"))
        raise Gone

    try:
        with contextlib.suppress(Gone):
            await _send(stack, token, _csv(seed=2), halfway)
        file_id = speculative["id"]

        async def failed() -> asyncpg.Record | None:
            row = await conn.fetchrow(
                "SELECT status, error_message, upload_receiving FROM imu_data_files WHERE id = $1", file_id
            )
            return row if row is not None and row["status"] == "failed" else None

        row = await until(failed, "the stopped upload's record failed", within=30)
        assert row["error_message"].startswith("the upload stopped after "), row["error_message"]
        assert row["upload_receiving"] is False
        await asyncio.sleep(1.0)  # a batch the parser had in flight is fenced, not stored
        assert await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", file_id) == 0
        _assert_no_bytes(stack, str(file_id))
    finally:
        await conn.close()


def _assert_no_bytes(stack: ServiceStack, file_id: str) -> None:
    uploads: Path = stack.settings.storage_dir
    left = [p.name for p in uploads.iterdir() if p.name.startswith(file_id)] if uploads.exists() else []
    assert left == [], left


async def test_parser_killed_mid_overlap_resumes_exactly(stack: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "dave")
    conn = await asyncpg.connect(database_url)
    speculative: dict[str, Any] = {}

    async def halfway() -> None:
        speculative.update(await _parsed_while_receiving(conn, "dave"))
        await kill_and_wait_restarted(stack.supervisor, "parser")

    try:
        response = await _send(stack, token, _csv(seed=3), halfway)
        assert response.status_code == 202, response.text
        done = await wait_terminal(database_url, str(speculative["id"]), timeout=90)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        assert done.attempts >= 2
    finally:
        await conn.close()


async def test_ingest_killed_mid_upload_leaves_a_failed_record(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "erin")
    conn = await asyncpg.connect(database_url)
    speculative: dict[str, Any] = {}

    async def halfway() -> None:
        speculative.update(await _parsed_while_receiving(conn, "erin"))
        await kill_and_wait_restarted(stack.supervisor, "ingest")

    try:
        with contextlib.suppress(httpx.HTTPError):
            await _send(stack, token, _csv(seed=4), halfway)
        done = await wait_terminal(database_url, str(speculative["id"]), timeout=60)
        assert done.status == "failed" and done.samples == 0, done
        assert done.error_message is not None and "the ingest receiving it stopped" in done.error_message
        _assert_no_bytes(stack, str(speculative["id"]))
    finally:
        await conn.close()


async def test_options_after_the_file_record_it_anew(stack: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "frank")
    conn = await asyncpg.connect(database_url)
    speculative: dict[str, Any] = {}

    async def halfway() -> None:
        speculative.update(await _parsed_while_receiving(conn, "frank"))

    try:
        response = await _send(stack, token, _csv(seed=5), halfway, after={"timezone": "Europe/Berlin"})
        assert response.status_code == 202, response.text
        record = response.json()
        gone = speculative["id"]
        assert record["id"] != str(gone)
        assert await conn.fetchval("SELECT count(*) FROM imu_data_files WHERE id = $1", gone) == 0
        done = await wait_terminal(database_url, record["id"], timeout=60)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        assert await conn.fetchval(
            "SELECT timezone FROM imu_data_files WHERE id = $1::uuid", record["id"]
        ) == ("Europe/Berlin")
        assert await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", gone) == 0
    finally:
        await conn.close()


async def test_a_binary_file_waits_for_its_last_byte(stack: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "grace")
    conn = await asyncpg.connect(database_url)
    data = (DATA / "ggirread_ax3_testfile.cwa").read_bytes()

    async def given_back() -> None:
        async def released() -> bool:
            row = await _receiving(conn, "grace")
            return row is not None and row["status"] == "queued" and row["attempts"] >= 1

        await until(released, "the parser gave the streaming .cwa back", within=30)

    try:
        response = await _send(stack, token, data, given_back, filename="ax3.cwa", chunk=4096)
        assert response.status_code == 202, response.text
        done = await wait_terminal(database_url, response.json()["id"], timeout=60)
        assert done.status == "completed", done.error_message
        assert done.samples == 17_400  # as in tests/e2e/test_real_files.py
    finally:
        await conn.close()
