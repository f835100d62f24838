"""Processing that overlaps the upload, with uploads in S3 (SeaweedFS): real services.

On S3 such a body is stored as segments, which the parser reads as they arrive
(imuflow/storage/segments.py). The body is sent slowly and waits, halfway, until samples of
the file still being uploaded are stored; afterwards the bucket is listed: only the upload's
manifest and segments are left (nothing once the file is deleted), or nothing at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Any

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from imuflow.storage import S3Storage
from imuflow.storage.s3 import PART
from tests.e2e.helpers import bearer, make_token
from tests.faults.helpers import kill_and_wait_restarted, wait_terminal
from tests.ingest.test_early import _csv, _parsed_while_receiving, _send
from tests.objectstore import S3Server, leftovers
from tests.servers import SettingsFactory
from tests.stack import ServiceStack, StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
ROWS = 600_000  # 22 MB: two 8 MiB segments before the last part
CHUNK = 256 * 1024


@pytest.fixture
async def stack(
    settings_factory: SettingsFactory, s3_server: S3Server, s3_prefix: str, service_stack: StartStack
) -> ServiceStack:
    settings: Settings = settings_factory(**s3_server.settings(s3_prefix))
    return await service_stack(
        settings,
        env={
            "IMUFLOW_OVERLAP_MIN_BYTES": "1000000",
            "IMUFLOW_BATCH_SIZE": "20000",
            "IMUFLOW_ADAPTIVE_BATCHING": "false",
        },
    )


def _stored(file_id: str, size: int) -> list[str]:
    """The objects of an upload of `size` bytes stored as segments: manifest and segments."""
    return [file_id] + [f"{file_id}.seg.{n}" for n in range(math.ceil(size / PART))]


async def _left(store: S3Storage, expected: list[str]) -> None:
    """The bucket (this test's prefix) holds exactly `expected` and no multipart upload."""

    async def settled() -> bool:
        objects, uploads = await leftovers(store)
        return sorted(k.rsplit("/", 1)[-1] for k in objects) == sorted(expected) and uploads == []

    try:
        await until(settled, "the bucket settled", within=15, every=0.2)
    except AssertionError:
        raise AssertionError(f"left in the bucket: {await leftovers(store)}") from None


async def test_s3_upload_parsed_while_it_streams_is_stored_once_and_deleted_whole(
    stack: ServiceStack, database_url: str, s3_store: S3Storage
) -> None:
    token = await make_token(database_url, "alice")
    data = _csv(ROWS)
    conn = await asyncpg.connect(database_url)
    seen: dict[str, Any] = {}

    async def halfway() -> None:
        seen.update(await _parsed_while_receiving(conn, "alice"))
        objects, _ = await leftovers(s3_store)
        seen["segments"] = sorted(k.rsplit("/", 1)[-1] for k in objects)

    try:
        response = await _send(stack, token, data, halfway, chunk=CHUNK, timezone="UTC")
        assert response.status_code == 202, response.text
        record = response.json()
        assert record["id"] == str(seen["id"])
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["size_bytes"] == len(data)
        assert seen["stored"] > 0 and f"{seen['id']}.seg.0" in seen["segments"], seen
        done = await wait_terminal(database_url, str(seen["id"]), timeout=90)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
    finally:
        await conn.close()
    file_id = str(seen["id"])
    await _left(s3_store, _stored(file_id, len(data)))  # each byte once: no multipart copy
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        deleted = await client.delete(f"{stack.progress_url}/api/files/{file_id}", headers=bearer(token))
    assert deleted.status_code == 204, deleted.text
    await _left(s3_store, [])


async def test_s3_client_gone_mid_upload_leaves_no_object_and_no_samples(
    stack: ServiceStack, database_url: str, s3_store: S3Storage
) -> None:
    token = await make_token(database_url, "bob")
    conn = await asyncpg.connect(database_url)
    seen: dict[str, Any] = {}

    async def halfway() -> None:
        seen.update(await _parsed_while_receiving(conn, "bob"))
        raise ConnectionResetError("the client goes away")

    try:
        with contextlib.suppress(httpx.HTTPError, ConnectionResetError):
            await _send(stack, token, _csv(ROWS, seed=1), halfway, chunk=CHUNK)
        done = await wait_terminal(database_url, str(seen["id"]), timeout=60)
        assert done.status == "failed" and done.samples == 0, done
    finally:
        await conn.close()
    await _left(s3_store, [])


async def test_s3_parser_killed_mid_overlap_resumes_exactly(
    stack: ServiceStack, database_url: str, s3_store: S3Storage
) -> None:
    token = await make_token(database_url, "dave")
    conn = await asyncpg.connect(database_url)
    seen: dict[str, Any] = {}

    async def halfway() -> None:
        seen.update(await _parsed_while_receiving(conn, "dave"))
        await kill_and_wait_restarted(stack.supervisor, "parser")

    try:
        response = await _send(stack, token, _csv(ROWS, seed=3), halfway, chunk=CHUNK)
        assert response.status_code == 202, response.text
        done = await wait_terminal(database_url, str(seen["id"]), timeout=90)
        assert done.status == "completed", done.error_message
        assert (done.samples, done.distinct) == (ROWS, ROWS)
        assert done.attempts >= 2
    finally:
        await conn.close()
    await _left(s3_store, _stored(str(seen["id"]), len(_csv(ROWS, seed=3))))
