"""The upload API against a real ingest process, Postgres and broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, make_token
from tests.servers import SettingsFactory
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
SMALL = DATA / "phyphox_deadreckoning_Gyroscope.csv"


@pytest.fixture
async def ingest(test_settings: Settings, service_stack: StartStack) -> ServiceStack:
    return await service_stack(
        test_settings,
        env={"IMUFLOW_MAX_UPLOAD_BYTES": "1000000", "IMUFLOW_UPLOAD_BURST": "60"},
        services=["ingest"],
    )


async def _post(stack: ServiceStack, token: str | None, **kwargs: object) -> httpx.Response:
    headers = bearer(token) if token else {}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{stack.ingest_url}/api/files", headers=headers, **kwargs)  # type: ignore[arg-type]


async def test_rejections_have_reasons(ingest: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    cases = [
        (None, {"files": {"file": ("a.csv", b"x")}}, 401),
        ("imf_not-a-token", {"files": {"file": ("a.csv", b"x")}}, 401),
        (token, {"files": {"file": ("a.csv", b"")}}, 400),
        (token, {"data": {"format": "generic_csv"}, "files": {"other": ("a.csv", b"x")}}, 400),
        (token, {"content": b"plain body", "headers": {"content-type": "text/csv"}}, 400),
        (token, {"data": {"format": "no_such_format"}, "files": {"file": ("a.csv", b"x")}}, 400),
        (token, {"data": {"timezone": "Mars/Olympus"}, "files": {"file": ("a.csv", b"x")}}, 400),
    ]
    for who, kwargs, expected in cases:
        headers = kwargs.pop("headers", {}) if isinstance(kwargs, dict) else {}
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{ingest.ingest_url}/api/files",
                headers={**(bearer(who) if who else {}), **headers},
                **kwargs,  # type: ignore[arg-type]
            )
        assert response.status_code == expected, (kwargs, response.text)
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]
    # Nothing half-written is left behind by the rejected uploads.
    uploads = ingest.settings.storage_dir
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_too_large_is_refused_while_streaming(ingest: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    boundary = "b0undary"

    async def multipart() -> AsyncIterator[bytes]:
        # Chunked (no Content-Length): only counting while streaming can stop it.
        yield f"--{boundary}\r\n".encode()
        yield b'Content-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(160):  # 10 MiB against a 1 MB limit
            yield b"0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response: httpx.Response | None = None
    async with httpx.AsyncClient(timeout=30) as client:
        # The server may close the connection right after answering 413.
        with contextlib.suppress(httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            response = await client.post(
                f"{ingest.ingest_url}/api/files",
                headers={**bearer(token), "content-type": f"multipart/form-data; boundary={boundary}"},
                content=multipart(),
            )
    if response is not None:
        assert response.status_code == 413
        assert "limit" in response.json()["detail"]
    uploads = ingest.settings.storage_dir
    assert not uploads.exists() or list(uploads.iterdir()) == []


async def test_declared_length_over_limit_is_refused_before_reading(
    ingest: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "alice")
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{ingest.ingest_url}/api/files",
            headers=bearer(token),
            files={"file": ("big.csv", b"1" * 2_000_000)},
        )
    assert response.status_code == 413


async def test_hostile_filename_is_kept_for_display_only(ingest: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    hostile = "../../etc/passwd\x1b[31m\r\n" + "A" * 400 + ".csv"
    response = await _post(ingest, token, files={"file": (hostile, SMALL.read_bytes())})
    assert response.status_code == 202, response.text
    record = response.json()
    name = record["filename"]
    assert "/" not in name and "\\" not in name and "\x1b" not in name and "\n" not in name
    assert len(name) <= 200 and name.endswith(".csv")
    conn = await asyncpg.connect(database_url)
    try:
        uri = await conn.fetchval("SELECT storage_uri FROM imu_data_files WHERE id = $1::uuid", record["id"])
    finally:
        await conn.close()
    stored = Path(uri.removeprefix("file://"))
    assert stored.name == record["id"]
    assert stored.parent == ingest.settings.storage_dir


async def test_same_bytes_twice_answer_200_unless_duplicates_allowed(
    ingest: ServiceStack, database_url: str
) -> None:
    token = await make_token(database_url, "alice")
    first = await _post(ingest, token, files={"file": ("a.csv", SMALL.read_bytes())})
    again = await _post(ingest, token, files={"file": ("b.csv", SMALL.read_bytes())})
    allowed = await _post(
        ingest, token, files={"file": ("c.csv", SMALL.read_bytes())}, data={"allow_duplicate": "true"}
    )
    assert (first.status_code, again.status_code, allowed.status_code) == (202, 200, 202)
    assert again.json()["id"] == first.json()["id"]
    assert allowed.json()["duplicate_of"] == first.json()["id"]
    # Another user's identical upload is theirs alone.
    other = await make_token(database_url, "bob")
    theirs = await _post(ingest, other, files={"file": ("a.csv", SMALL.read_bytes())})
    assert theirs.status_code == 202 and theirs.json()["duplicate_of"] is None


async def test_fifty_uploads_in_a_row_are_normal_use(ingest: ServiceStack, database_url: str) -> None:
    token = await make_token(database_url, "alice")
    statuses = []
    for i in range(50):
        response = await _post(ingest, token, files={"file": (f"f{i}.csv", f"t,ax\n{i},1\n".encode())})
        statuses.append(response.status_code)
    assert statuses == [202] * 50


async def test_rate_limit_answers_429_with_retry_after(
    settings_factory: SettingsFactory, service_stack: StartStack, database_url: str
) -> None:
    settings = settings_factory()
    stack = await service_stack(
        settings,
        env={"IMUFLOW_UPLOAD_BURST": "3", "IMUFLOW_UPLOAD_RATE_PER_MINUTE": "1"},
        services=["ingest"],
    )
    token = await make_token(database_url, "alice")
    codes = []
    for i in range(4):
        response = await _post(stack, token, files={"file": (f"f{i}.csv", f"t,ax\n{i},1\n".encode())})
        codes.append(response.status_code)
    assert codes == [202, 202, 202, 429]
    assert int(response.headers["retry-after"]) >= 1
