"""Processing that overlaps a resumable (tus) upload: recorded at its first PATCH, parsed growing.

Real ingest, parser and progress processes; the client sends PATCHes by hand (httpx), so a
test decides when bytes stop and start again. While waiting for the parser to store samples
of the upload still being received, a trickle of small PATCHes keeps bytes arriving (a job
waiting longer than IMUFLOW_UPLOAD_PAUSE_YIELD without one gives its slot back).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import bearer, follow_until_done, make_token
from tests.faults.helpers import kill, service_pid, wait_restarted, wait_terminal
from tests.stack import ServiceStack, StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(120)]
ROWS = 60_000
PATCH_BYTES = 128 * 1024
TRICKLE_BYTES = 2048
PAUSE_YIELD = 1.5
EXPIRY = 20.0  # longer than an ingest restart on a loaded machine (the restart test)
SHORT_EXPIRY = 4.0  # the expiry test's own: it waits for it, and restarts nothing
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


def _csv(rows: int = ROWS, seed: int = 0) -> bytes:
    lines = [b"time,ax,ay,az,gx,gy,gz\n"]
    lines += [b"%.2f,0.01,-0.02,%d.98,1.2,-5.6,9.0\n" % (i / 100, seed) for i in range(rows)]
    return b"".join(lines)


def _env(expiry: float) -> dict[str, str]:
    return {
        "IMUFLOW_OVERLAP_MIN_BYTES": "50000",
        "IMUFLOW_BATCH_SIZE": "2000",
        "IMUFLOW_ADAPTIVE_BATCHING": "false",
        "IMUFLOW_UPLOAD_PAUSE_YIELD": str(PAUSE_YIELD),
        "IMUFLOW_UPLOAD_EXPIRY": str(expiry),
    }


@pytest.fixture
async def stack(test_settings: Settings, service_stack: StartStack) -> ServiceStack:
    return await service_stack(test_settings, env=_env(EXPIRY))


class Upload:
    """One tus upload sent PATCH by PATCH."""

    def __init__(self, stack: ServiceStack, token: str, data: bytes) -> None:
        self.client = httpx.AsyncClient(
            base_url=stack.ingest_url, headers={**bearer(token), **TUS}, timeout=30, trust_env=False
        )
        self.data = data
        self.url = ""
        self.offset = 0

    async def create(self, **meta: str) -> str:
        metadata = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in meta.items())
        answer = await self.client.post(
            "/api/uploads", headers={"Upload-Length": str(len(self.data)), "Upload-Metadata": metadata}
        )
        assert answer.status_code == 201, answer.text
        self.url = answer.headers["location"]
        return self.url.rsplit("/", 1)[-1]

    async def patch(self, size: int = PATCH_BYTES) -> httpx.Response:
        body = self.data[self.offset : self.offset + size]
        answer = await self.client.patch(
            self.url, headers={**OCTETS, "Upload-Offset": str(self.offset)}, content=body
        )
        assert answer.status_code == 204, answer.text
        self.offset = int(answer.headers["upload-offset"])
        return answer

    async def slow_patch(self, size: int) -> None:
        """One PATCH whose body comes 16 KiB every 50 ms (an ingest is killed during it)."""
        body = self.data[self.offset : self.offset + size]

        async def pieces() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 16 * 1024):
                yield body[start : start + 16 * 1024]
                await asyncio.sleep(0.05)

        headers = {**OCTETS, "Upload-Offset": str(self.offset), "Content-Length": str(len(body))}
        await self.client.patch(self.url, headers=headers, content=pieces())

    async def send_until(self, stop: int, pause: float = 0.01) -> None:
        while self.offset < min(stop, len(self.data)):
            await self.patch(min(PATCH_BYTES, stop - self.offset))
            await asyncio.sleep(pause)

    async def trickle_until(self, done: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Small PATCHes every 0.2 s (bytes keep arriving) until `done()` gives a value."""
        for _ in range(300):
            if (value := await done()) is not None and value is not False:
                return value
            await self.patch(TRICKLE_BYTES)
            await asyncio.sleep(0.2)
        raise AssertionError(f"never: {what}")

    async def finish(self) -> httpx.Response:
        await self.send_until(len(self.data))
        head = await self.client.head(self.url)
        assert head.status_code == 200, head.text
        return head

    async def close(self) -> None:
        await self.client.aclose()


async def _record(conn: asyncpg.Connection, file_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM imu_data_files WHERE id = $1::uuid", file_id)
    return dict(row) if row is not None else None


async def _samples(conn: asyncpg.Connection, file_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1::uuid", file_id))


def _parsed_while_receiving(conn: asyncpg.Connection, file_id: str) -> Callable[[], Awaitable[Any]]:
    async def parsed() -> dict[str, Any] | None:
        row = await _record(conn, file_id)
        if row is None or not row["upload_receiving"]:
            return None
        return row if await _samples(conn, file_id) else None

    return parsed


def _assert_no_bytes(stack: ServiceStack, file_id: str) -> None:
    uploads: Path = stack.settings.storage_dir
    left = [p.name for p in uploads.iterdir() if p.name.startswith(file_id)] if uploads.exists() else []
    assert left == [], left


async def test_slow_patches_are_parsed_while_they_arrive(stack: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    data = _csv()
    conn = await asyncpg.connect(database_url)
    upload = Upload(stack, token, data)
    try:
        file_id = await upload.create(filename="walk.csv", timezone="UTC")
        await upload.send_until(len(data) // 3)
        live = await upload.trickle_until(_parsed_while_receiving(conn, file_id), "parsed while receiving")
        assert live["sha256"] == "" and live["size_bytes"] == len(data)
        follow = asyncio.create_task(
            follow_until_done(f"{stack.progress_url}/api/files/{file_id}/events", token)
        )
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            shown = (
                await client.get(f"{stack.progress_url}/api/files/{file_id}", headers=bearer(token))
            ).json()
        assert shown["status"] == "parsing" and shown["sample_count_exact"] is False, shown
        assert upload.offset < len(data)  # all of the above before the last PATCH
        head = await upload.finish()
        assert head.headers["imuflow-file-id"] == file_id
        events = await asyncio.wait_for(follow, 60)
        assert events[-1].type == "completed", events[-1].record
        assert events[-1].record["samples_processed"] == ROWS
        assert events[-1].record["sample_count_exact"] is True
        percents = [e.record["percent"] for e in events]
        assert percents == sorted(percents), "percent went backwards"
        done = await wait_terminal(database_url, file_id, timeout=60)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        record = await _record(conn, file_id)
        assert record is not None and record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size_bytes"] == len(data) and record["upload_parked"] is None
    finally:
        await upload.close()
        await conn.close()


async def test_a_pause_gives_the_slot_back_and_the_next_patch_resumes(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "bob")
    data = _csv(seed=1)
    conn = await asyncpg.connect(database_url)
    upload = Upload(stack, token, data)
    try:
        file_id = await upload.create(filename="pause.csv")
        await upload.send_until(len(data) // 3)
        await upload.trickle_until(_parsed_while_receiving(conn, file_id), "parsed while receiving")

        async def parked() -> dict[str, Any] | None:
            row = await _record(conn, file_id)
            return row if row is not None and row["upload_parked"] == "paused" else None

        # No byte for longer than PAUSE_YIELD: the job is queued, not holding the parser.
        row = await until(parked, "the paused upload's job given back", within=30, every=0.1)
        assert row["status"] == "queued" and row["upload_receiving"], row
        stored = await _samples(conn, file_id)
        await asyncio.sleep(PAUSE_YIELD)
        assert await _samples(conn, file_id) == stored  # nothing parsed while paused

        await upload.patch()  # the next bytes queue it again, once

        async def resumed() -> bool:
            row = await _record(conn, file_id)
            return row is not None and row["upload_parked"] is None and await _samples(conn, file_id) > stored

        await until(resumed, "the job parsing again after the next PATCH", within=30, every=0.1)
        await upload.finish()
        done = await wait_terminal(database_url, file_id, timeout=60)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        assert done.attempts == 1  # a pause counts no attempt
    finally:
        await upload.close()
        await conn.close()


@pytest.mark.parametrize("end", ["terminated", "expired"])
async def test_terminated_or_expired_mid_parse_fails_without_samples(
    test_settings: Settings, service_stack: StartStack, database_url: str, end: str
) -> None:
    expiry = SHORT_EXPIRY if end == "expired" else EXPIRY
    stack = await service_stack(test_settings, env=_env(expiry))
    token = await make_token(database_url, f"carol-{end}")
    conn = await asyncpg.connect(database_url)
    upload = Upload(stack, token, _csv(seed=2 if end == "terminated" else 3))
    try:
        file_id = await upload.create(filename=f"{end}.csv")
        await upload.send_until(len(upload.data) // 3)
        await upload.trickle_until(_parsed_while_receiving(conn, file_id), "parsed while receiving")
        if end == "terminated":
            gone = await upload.client.delete(upload.url)
            assert gone.status_code == 204, gone.text
        # else: nothing more is sent; the upload expires after `expiry` seconds

        async def failed() -> dict[str, Any] | None:
            row = await _record(conn, file_id)
            return row if row is not None and row["status"] == "failed" else None

        row = await until(failed, "the upload's record failed", within=expiry * 4 + 10, every=0.1)
        expected = "the client terminated it" if end == "terminated" else "it expired"
        assert row["error_message"].startswith("the upload stopped after ")
        assert expected in row["error_message"], row["error_message"]
        assert row["upload_receiving"] is False
        await asyncio.sleep(1.0)  # a batch the parser had in flight is fenced, not stored
        assert await _samples(conn, file_id) == 0
        _assert_no_bytes(stack, file_id)
        assert (await upload.client.head(upload.url)).status_code == 404
    finally:
        await upload.close()
        await conn.close()


async def test_duplicate_of_a_partly_parsed_upload_names_the_earlier_record(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "dave")
    data = _csv(seed=4)
    conn = await asyncpg.connect(database_url)
    first, again = Upload(stack, token, data), Upload(stack, token, data)
    try:
        first_id = await first.create(filename="dup.csv")
        await first.finish()
        speculative = await again.create(filename="dup.csv")
        await again.send_until(len(data) // 3)
        await again.trickle_until(_parsed_while_receiving(conn, speculative), "parsed while receiving")
        head = await again.finish()
        assert head.headers["imuflow-file-id"] == first_id  # as for any duplicate tus upload
        for table in ("imu_samples", "streaming_processing_logs", "imu_preview_blocks", "file_events"):
            count = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE file_id = $1::uuid", speculative)
            assert count == 0, table
        assert await _record(conn, speculative) is None
        _assert_no_bytes(stack, speculative)
        await asyncio.sleep(1.0)  # the fenced speculative job stores nothing later either
        assert await _samples(conn, speculative) == 0
        done = await wait_terminal(database_url, first_id, timeout=60)
        assert (done.status, done.samples) == ("completed", ROWS)
    finally:
        await first.close()
        await again.close()
        await conn.close()


async def test_ingest_killed_mid_patch_the_record_survives_and_finishes(
    stack: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "erin")
    data = _csv(seed=5)
    conn = await asyncpg.connect(database_url)
    upload = Upload(stack, token, data)
    try:
        file_id = await upload.create(filename="restart.csv")
        await upload.send_until(len(data) // 3)
        await upload.trickle_until(_parsed_while_receiving(conn, file_id), "parsed while receiving")
        sending = asyncio.create_task(upload.slow_patch(256 * 1024))
        await asyncio.sleep(0.5)  # the PATCH streaming in (its bytes in `.tus`, not yet recorded)
        pid = service_pid(stack.supervisor, "ingest")
        kill(pid)
        with contextlib.suppress(httpx.HTTPError):
            await sending
        await wait_restarted(stack.supervisor, "ingest", pid)
        await stack.supervisor.wait_healthy(within=30)
        row = await _record(conn, file_id)
        assert row is not None and row["upload_receiving"] and row["status"] != "failed", row
        head = await upload.client.head(upload.url)  # the client resumes from ingest's offset
        assert head.status_code == 200, head.text
        upload.offset = int(head.headers["upload-offset"])
        await upload.finish()
        done = await wait_terminal(database_url, file_id, timeout=60)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        record = await _record(conn, file_id)
        assert record is not None and record["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        await upload.close()
        await conn.close()
