"""The real services with uploads in S3 (`IMUFLOW_STORAGE_URL=s3://…` on SeaweedFS).

No service touches a shared filesystem: files of each kind parse with exact counts, a
delete leaves no object, and an upload that is aborted (the client goes away mid-body,
or it is too large) leaves no object and no unfinished multipart upload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from imuflow.storage import S3Storage
from tests.e2e.helpers import DATA, bearer, make_token, once_ended, upload
from tests.ingest.test_archive import PHYPHOX, phyphox_zip
from tests.objectstore import S3Server, leftovers
from tests.parser.formats.test_gt3x import RATE, make_gt3x, synthetic_log
from tests.servers import SettingsFactory
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(240)]
MIB = 1024 * 1024
FAST = {"IMUFLOW_BATCH_SIZE": "4000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}


@pytest.fixture
def s3_settings(settings_factory: SettingsFactory, s3_server: S3Server, s3_prefix: str) -> Settings:
    """This test's settings with uploads under its own prefix of the session's store."""
    return settings_factory(max_upload_bytes=12 * MIB, **s3_server.settings(s3_prefix))


async def _assert_empty(store: S3Storage, within: float = 15.0) -> None:
    """No object and no multipart upload left in the bucket (within `within` s)."""

    async def empty() -> bool:
        return await leftovers(store) == ([], [])

    try:
        await until(empty, "the bucket emptied", within=within, every=0.2)
    except AssertionError:
        raise AssertionError(f"left in the bucket: {await leftovers(store)}") from None


async def test_files_of_every_kind_parse_from_s3_and_delete_leaves_nothing(
    s3_settings: Settings, service_stack: StartStack, database_url: str, s3_store: S3Storage, tmp_path: Path
) -> None:
    stack = await service_stack(s3_settings, env=FAST)
    token = await make_token(database_url, "researcher")
    gt3x = tmp_path / "recording.gt3x"
    gt3x.write_bytes(make_gt3x(synthetic_log()[0]))
    expected = {
        "xio_fusion_sensor_data.csv": 13_514,
        "ggirread_ax3_testfile.cwa": 17_400,
        "recording.gt3x": 9 * RATE,
    }
    paths = {"xio_fusion_sensor_data.csv": DATA / "xio_fusion_sensor_data.csv", "recording.gt3x": gt3x}
    paths["ggirread_ax3_testfile.cwa"] = DATA / "ggirread_ax3_testfile.cwa"
    ids: dict[str, str] = {}
    for name, path in paths.items():
        response = await upload(stack.ingest_url, token, path)
        assert response.status_code == 202, (name, response.text)
        ids[name] = response.json()["id"]
    response = await upload(stack.ingest_url, token, phyphox_zip(tmp_path / "deadreckoning.zip"))
    assert response.status_code == 202, response.text
    parent = response.json()
    assert len(parent["children"]) == 3
    records = await once_ended(stack.progress_url, token, [*ids.values(), *parent["children"]], within=150)
    by_id = {r["id"]: r for r in records}
    for name, file_id in ids.items():
        record = by_id[file_id]
        assert record["status"] == "completed", (name, record["error_message"])
        assert (record["samples_processed"], record["sample_count_exact"]) == (expected[name], True), name
    children = [by_id[c] for c in parent["children"]]
    assert {c["filename"]: c["samples_processed"] for c in children} == {
        n: c for n, (_, c) in PHYPHOX.items()
    }
    assert all(c["status"] == "completed" for c in children)

    conn = await asyncpg.connect(database_url)
    try:
        uris = [r["storage_uri"] for r in await conn.fetch("SELECT storage_uri FROM imu_data_files")]
        stored = await conn.fetchval("SELECT count(*) FROM imu_samples")
    finally:
        await conn.close()
    assert len(uris) == 7 and all(u.startswith(f"{s3_store.url}/") for u in uris)
    assert stored == sum(expected.values()) + sum(c for _, c in PHYPHOX.values())
    assert not s3_settings.storage_dir.exists()  # no service wrote a local upload
    objects, _ = await leftovers(s3_store)
    assert len(objects) == 7

    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as client:
        # A reparse reads the object again from its first byte.
        cwa = ids["ggirread_ax3_testfile.cwa"]
        assert (await client.post(f"{stack.progress_url}/api/files/{cwa}/reparse", json={})).status_code < 300
        (again,) = await once_ended(stack.progress_url, token, [cwa], within=150)
        assert (again["status"], again["samples_processed"]) == ("completed", 17_400), again
        deleted = await client.delete(f"{stack.progress_url}/api/files/{parent['id']}")
        assert deleted.status_code == 204
        objects, _ = await leftovers(s3_store)
        assert len(objects) == 3  # the ZIP and its three streams are gone
        for file_id in ids.values():
            assert (await client.delete(f"{stack.progress_url}/api/files/{file_id}")).status_code == 204
    assert await leftovers(s3_store) == ([], [])


async def _disconnect_mid_body(ingest_url: str, token: str, send: int, store: S3Storage) -> None:
    """Send a multipart upload's headers and `send` body bytes of a larger one, then hang up."""
    url = urlsplit(ingest_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
    ).encode()
    request = (
        f"POST /api/files HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + 11 * MIB}\r\n\r\n"
    ).encode()
    writer.write(request + head)
    for _ in range(send // MIB):
        writer.write(b"1,2,3\n" * (MIB // 6) + b"1" * (MIB % 6))
        await writer.drain()
    # Hang up only once a part is in S3, so there is a multipart upload to abort.
    deadline = asyncio.get_running_loop().time() + 10
    while not (await leftovers(store))[1]:
        assert asyncio.get_running_loop().time() < deadline, "no multipart upload was started"
        await asyncio.sleep(0.1)
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    del reader


async def test_aborted_uploads_leave_no_object_and_no_multipart_upload(
    s3_settings: Settings, service_stack: StartStack, database_url: str, s3_store: S3Storage
) -> None:
    stack = await service_stack(s3_settings, services=("ingest",))
    token = await make_token(database_url, "alice")

    await _disconnect_mid_body(stack.ingest_url, token, 10 * MIB, s3_store)  # past the first 8 MiB part
    await _assert_empty(s3_store)

    async def too_large() -> AsyncIterator[bytes]:  # chunked: only counting while streaming stops it
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(20 * 16):  # 20 MiB against 12 MiB: one 8 MiB part is stored first
            yield b"0" * 65536
        yield b"\r\n--b0undary--\r\n"

    response: httpx.Response | None = None
    async with httpx.AsyncClient(timeout=60) as client:
        with contextlib.suppress(httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            response = await client.post(
                f"{stack.ingest_url}/api/files",
                headers={**bearer(token), "content-type": "multipart/form-data; boundary=b0undary"},
                content=too_large(),
            )
    if response is not None:
        assert response.status_code == 413, response.text
    await _assert_empty(s3_store)
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM imu_data_files") == 0
    finally:
        await conn.close()


async def test_an_unreachable_store_answers_503_and_records_nothing(
    settings_factory: SettingsFactory, service_stack: StartStack, database_url: str, s3_server: S3Server
) -> None:
    gone = {**s3_server.settings("gone"), "s3_endpoint_url": "http://127.0.0.1:9"}  # nothing listens
    # Alive but not ready: /readyz names the store as down, so a load balancer sends no uploads.
    stack = await service_stack(settings_factory(**gone), services=("ingest",), ready=False)
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(50):  # the first background check runs within a second of startup
            ready = await client.get(f"{stack.ingest_url}/readyz")
            if ready.json().get("storage") == "down":
                break
            await asyncio.sleep(0.2)
    assert ready.status_code == 503 and ready.json()["storage"] == "down", ready.text
    token = await make_token(database_url, "alice")
    response = await upload(stack.ingest_url, token, DATA / "xio_fusion_sensor_data.csv")
    assert response.status_code == 503, response.text
    assert "storage" in response.json()["detail"]
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM imu_data_files") == 0
    finally:
        await conn.close()
