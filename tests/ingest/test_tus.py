"""Resumable uploads (tus 1.0.0) against a real ingest, Postgres, broker and storage.

The client is tuspy (the tus project's Python client), not our own; every test runs on
a local directory and on the embedded SeaweedFS S3 store.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from tusclient import client as tus_client
from tusclient.storage.filestorage import FileStorage

from imuflow.auth import SESSION_COOKIE
from imuflow.settings import Settings
from imuflow.storage import open_storage
from tests.e2e.helpers import bearer, make_token
from tests.faults.helpers import kill_and_wait_restarted, wait_for
from tests.objectstore import S3Server, stored_names
from tests.servers import SettingsFactory
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
MIB = 1024 * 1024
TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {"Content-Type": "application/offset+octet-stream"}


@pytest.fixture(params=["local", "s3"])
def tus_settings(request: pytest.FixtureRequest, settings_factory: SettingsFactory) -> Settings:
    """Ingest's settings on a local directory or on S3 (this test's own prefix)."""
    extra: dict[str, Any] = {}
    if request.param == "s3":
        s3_server: S3Server = request.getfixturevalue("s3_server")
        extra = s3_server.settings(request.getfixturevalue("s3_prefix"))
    return settings_factory(max_upload_bytes=16 * MIB, max_pending_uploads=3, **extra)


async def _ingest(service_stack: StartStack, settings: Settings) -> ServiceStack:
    return await service_stack(settings, services=["ingest"])


def _metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def _create(client: httpx.AsyncClient, length: int, **headers: str) -> str:
    answer = await client.post("/api/uploads", headers={**TUS, "Upload-Length": str(length), **headers})
    assert answer.status_code == 201, answer.text
    return answer.headers["location"]


async def _leftovers(settings: Settings) -> tuple[list[str], list[str]]:
    """Names (without the S3 prefix) of objects and of unfinished uploads or partial files."""
    store = open_storage(settings)
    try:
        objects, unfinished = await stored_names(store)
    finally:
        await store.close()
    return [o.rsplit("/", 1)[-1] for o in objects], [u.rsplit("/", 1)[-1] for u in unfinished]


async def test_tuspy_uploads_in_chunks_and_a_new_client_resumes_after_a_restart(
    tus_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await _ingest(service_stack, tus_settings)
    token = await make_token(database_url, "alice")
    data = os.urandom(11 * MIB + 12345)  # S3: two multipart parts and a tail on the way
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    urls = FileStorage(str(tmp_path / "tus-urls.json"))  # type: ignore[no-untyped-call]

    def first_part() -> str:
        client = tus_client.TusClient(f"{stack.ingest_url}/api/uploads", headers=bearer(token))
        uploader = client.uploader(
            str(path),
            chunk_size=3 * MIB,
            metadata={"filename": "recording.bin"},
            store_url=True,
            url_storage=urls,
        )
        uploader.upload(stop_at=6 * MIB)  # then the client "goes away"
        assert uploader.offset == 6 * MIB
        return str(uploader.url)

    url = await asyncio.to_thread(first_part)
    # The ingest that took those bytes dies: its running hash is gone with it.
    await kill_and_wait_restarted(stack.supervisor, "ingest")
    await stack.supervisor.wait_healthy(within=30)

    def resume() -> tuple[int, str]:
        client = tus_client.TusClient(f"{stack.ingest_url}/api/uploads", headers=bearer(token))
        uploader = client.uploader(str(path), chunk_size=3 * MIB, store_url=True, url_storage=urls)
        start = uploader.offset  # found by fingerprint, then HEAD
        assert uploader.url == url
        uploader.upload()
        return start, str(uploader.request.response_headers.get("imuflow-file-id"))

    start, file_id = await asyncio.to_thread(resume)
    assert start == 6 * MIB
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM imu_data_files WHERE id = $1::uuid", file_id)
        queued = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", file_id)
    finally:
        await conn.close()
    assert row is not None and row["filename"] == "recording.bin"
    assert row["size_bytes"] == len(data)
    assert row["sha256"] == hashlib.sha256(data).hexdigest()  # exact after the restart
    assert queued == 1
    store = open_storage(tus_settings)
    try:
        reader = await store.open(row["storage_uri"])
        assert await asyncio.to_thread(reader.read) == data
        reader.close()
    finally:
        await store.close()
    objects, unfinished = await _leftovers(tus_settings)
    assert objects == [file_id] and unfinished == []  # no tail, no partial, no open multipart upload


async def test_offsets_checksums_termination_isolation_and_limits(
    tus_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await _ingest(service_stack, tus_settings)
    alice, bob = await make_token(database_url, "alice"), await make_token(database_url, "bob")
    async with (
        httpx.AsyncClient(base_url=stack.ingest_url, headers=bearer(alice), timeout=30) as client,
        httpx.AsyncClient(base_url=stack.ingest_url, headers=bearer(bob), timeout=30) as other,
    ):
        found = await client.options("/api/uploads")
        assert found.status_code == 204
        assert found.headers["tus-version"] == "1.0.0"
        assert {"creation", "creation-with-upload", "termination", "checksum", "expiration"} <= set(
            found.headers["tus-extension"].split(",")
        )
        assert "sha1" in found.headers["tus-checksum-algorithm"]
        assert found.headers["tus-max-size"] == str(16 * MIB)
        # The page (another origin: the progress port) may PATCH with the tus headers and read them.
        page = f"http://127.0.0.1:{tus_settings.progress_port}"
        preflight = await client.options(
            "/api/uploads/any",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "tus-resumable,upload-offset,upload-checksum,content-type",
            },
        )
        assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == page
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        exposed = (await client.options("/api/uploads", headers={"Origin": page})).headers
        assert {"location", "upload-offset", "upload-length", "tus-version", "tus-resumable"} <= {
            h.strip().lower() for h in exposed["access-control-expose-headers"].split(",")
        }

        too_big = await client.post("/api/uploads", headers={**TUS, "Upload-Length": str(16 * MIB + 1)})
        assert too_big.status_code == 413 and "limit" in too_big.json()["detail"]
        bad_format = await client.post(
            "/api/uploads",
            headers={**TUS, "Upload-Length": "10", "Upload-Metadata": _metadata(format="nope")},
        )
        assert bad_format.status_code == 400 and "format" in bad_format.json()["detail"]

        body = os.urandom(100)
        location = await _create(client, len(body), **{"Upload-Metadata": _metadata(filename="a.bin")})
        wrong = await client.patch(
            location, content=body[:10], headers={**TUS, **OCTETS, "Upload-Offset": "5"}
        )
        assert wrong.status_code == 409

        bad_sum = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
        mismatch = await client.patch(
            location,
            content=body[:40],
            headers={**TUS, **OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {bad_sum}"},
        )
        assert mismatch.status_code == 460
        assert (await client.head(location, headers=TUS)).headers["upload-offset"] == "0"
        good_sum = base64.b64encode(hashlib.sha1(body[:40]).digest()).decode()
        ok = await client.patch(
            location,
            content=body[:40],
            headers={**TUS, **OCTETS, "Upload-Offset": "0", "Upload-Checksum": f"sha1 {good_sum}"},
        )
        assert ok.status_code == 204 and ok.headers["upload-offset"] == "40"
        assert "upload-expires" in ok.headers
        past_end = await client.patch(
            location, content=b"x" * 61, headers={**TUS, **OCTETS, "Upload-Offset": "40"}
        )
        assert past_end.status_code == 413

        # Another user's upload does not exist for them.
        for method in ("HEAD", "PATCH", "DELETE"):
            answer = await other.request(
                method,
                location,
                content=b"x" if method == "PATCH" else None,
                headers={**TUS, **OCTETS, "Upload-Offset": "40"},
            )
            assert answer.status_code == 404, method

        # A cookie-authenticated PATCH from a foreign page is refused before anything else.
        async with httpx.AsyncClient(base_url=stack.ingest_url, cookies={SESSION_COOKIE: "x"}) as browser:
            forged = await browser.patch(
                location,
                content=b"x",
                headers={**TUS, **OCTETS, "Upload-Offset": "40", "Origin": "http://evil.example"},
            )
        assert forged.status_code == 403

        # Two PATCHes at once: the second is refused while the first holds the upload.
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield body[40:50]
            await release.wait()
            yield body[50:]

        first = asyncio.create_task(
            client.patch(location, content=slow_body(), headers={**TUS, **OCTETS, "Upload-Offset": "40"})
        )
        await wait_for(
            database_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            timeout=10,
            what="the lock",
        )
        second = await client.patch(
            location, content=body[40:], headers={**TUS, **OCTETS, "Upload-Offset": "40"}
        )
        assert second.status_code == 409
        release.set()
        finished = await first
        assert finished.status_code == 204 and finished.headers["upload-offset"] == "100"
        file_id = finished.headers["imuflow-file-id"]
        conn = await asyncpg.connect(database_url)
        try:
            sha = await conn.fetchval("SELECT sha256 FROM imu_data_files WHERE id = $1::uuid", file_id)
        finally:
            await conn.close()
        assert sha == hashlib.sha256(body).hexdigest()  # bytes in order, none twice
        head = await client.head(location, headers=TUS)
        assert head.status_code == 200 and head.headers["imuflow-file-id"] == file_id

        # Termination removes the upload and its bytes.
        doomed = await _create(client, 1000)
        await client.patch(doomed, content=b"y" * 300, headers={**TUS, **OCTETS, "Upload-Offset": "0"})
        assert (await client.delete(doomed, headers=TUS)).status_code == 204
        assert (await client.head(doomed, headers=TUS)).status_code == 404
        objects, unfinished = await _leftovers(tus_settings)
        assert objects == [file_id] and unfinished == []

        # IMUFLOW_MAX_PENDING_UPLOADS (3 here) unfinished uploads per user, then 429.
        for _ in range(3):
            await _create(client, 10)
        refused = await client.post("/api/uploads", headers={**TUS, "Upload-Length": "10"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert (await other.post("/api/uploads", headers={**TUS, "Upload-Length": "10"})).status_code == 201


async def test_unfinished_uploads_expire_and_leave_nothing_in_storage(
    tus_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    settings = tus_settings.model_copy(update={"upload_expiry": 2.0})
    stack = await _ingest(service_stack, settings)
    token = await make_token(database_url, "alice")
    async with httpx.AsyncClient(base_url=stack.ingest_url, headers=bearer(token), timeout=30) as client:
        location = await _create(client, 10 * MIB)
        # 6 MiB: on S3 a multipart upload with one part, plus nothing in the tail.
        sent = await client.patch(
            location, content=os.urandom(6 * MIB), headers={**TUS, **OCTETS, "Upload-Offset": "0"}
        )
        assert sent.status_code == 204
        small = await _create(client, 100)
        await client.patch(small, content=b"z" * 10, headers={**TUS, **OCTETS, "Upload-Offset": "0"})
        objects, unfinished = await _leftovers(settings)
        assert objects or unfinished  # something is stored while they are alive
        await wait_for(
            database_url, "SELECT count(*) = 0 FROM tus_uploads", timeout=20, interval=0.2, what="the sweeper"
        )
        assert (await client.head(location, headers=TUS)).status_code == 404
        metrics = (await client.get("/metrics")).text
    assert await _leftovers(settings) == ([], [])
    expired = [line for line in metrics.splitlines() if line.startswith("imuflow_tus_uploads_expired_total")]
    assert expired == ["imuflow_tus_uploads_expired_total 2.0"]
