"""A real S3-compatible store for tests: one SeaweedFS (`weed mini`) per test session.

Every port it opens is a free one (imuflow/stack/objectstore.py sets them all), so it never
collides with a running `imuflow up --object-store` or another test run. Each test gets
its own key prefix (`s3://imuflow-test/t<run>`), so tests sharing the store never see each
other's objects. `IMUFLOW_TEST_S3_ENDPOINT_URL` (+ `AWS_*` credentials) uses another store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imuflow.stack.broker import BrokerStorage, s3_broker_storage
from imuflow.stack.objectstore import REGION, start_object_store
from imuflow.storage import LocalStorage, S3Storage, Storage

BUCKET = "imuflow-test"


@dataclass(frozen=True)
class S3Server:
    """Where the session's store is and how to sign in to it."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    bucket: str = BUCKET

    def settings(self, prefix: str) -> dict[str, Any]:
        """Settings overrides for uploads under `s3://bucket/prefix`."""
        return {
            "storage_url": f"s3://{self.bucket}/{prefix}",
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": self.access_key_id,
            "s3_secret_access_key": self.secret_access_key,
        }

    def storage(self, prefix: str, bucket: str | None = None) -> S3Storage:
        """A client for `s3://bucket/prefix`."""
        return S3Storage(
            f"s3://{bucket or self.bucket}/{prefix}",
            endpoint_url=self.endpoint_url,
            region=REGION,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
        )

    async def broker_storage(self, name: str) -> BrokerStorage:
        """A new bucket `name-<random>` for a durable Tansu's log, and its storage flags."""
        bucket = f"{name}-{uuid.uuid4().hex[:10]}"
        s3 = self.storage("", bucket=bucket)
        try:
            await s3.ensure_bucket()
        finally:
            await s3.close()
        return s3_broker_storage(
            bucket,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=REGION,
        )


@pytest.fixture(scope="session")
async def s3_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[S3Server]:
    """The session's S3 store (started on first use)."""
    if endpoint := os.environ.get("IMUFLOW_TEST_S3_ENDPOINT_URL"):
        yield S3Server(endpoint, os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
        return
    store = await start_object_store(tmp_path_factory.mktemp("seaweedfs"), bucket=BUCKET)
    try:
        creds = store.credentials
        yield S3Server(store.endpoint_url, creds.access_key_id, creds.secret_access_key)
    finally:
        store.stop()


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def s3_store(s3_server: S3Server, s3_prefix: str) -> AsyncIterator[S3Storage]:
    """A client of this test's prefix (to write, or to look at what the services left)."""
    store = s3_server.storage(s3_prefix)
    try:
        yield store
    finally:
        await store.close()


async def leftovers(store: S3Storage) -> tuple[list[str], list[str]]:
    """Keys of the objects and of the unfinished multipart uploads under the store's prefix."""
    client = await store.client()
    prefix = f"{store.prefix}/" if store.prefix else ""
    listed = await client.list_objects_v2(Bucket=store.bucket, Prefix=prefix)
    uploads = await client.list_multipart_uploads(Bucket=store.bucket, Prefix=prefix)
    return [o["Key"] for o in listed.get("Contents", [])], [u["Key"] for u in uploads.get("Uploads", [])]


@pytest.fixture(params=["local", "s3"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, s3_prefix: str, s3_server: S3Server
) -> AsyncIterator[Storage]:
    """The same storage tests on a local directory and on the S3 store."""
    store: Storage
    store = LocalStorage(tmp_path / "uploads") if request.param == "local" else s3_server.storage(s3_prefix)
    try:
        yield store
    finally:
        await store.close()


async def stored_names(store: Storage) -> tuple[list[str], list[str]]:
    """What is left in a store: object names and unfinished uploads (S3) or part files."""
    if isinstance(store, S3Storage):
        return await leftovers(store)
    assert isinstance(store, LocalStorage)
    names = sorted(p.name for p in store.directory.iterdir()) if store.directory.exists() else []
    return [n for n in names if not n.endswith(".part")], [n for n in names if n.endswith(".part")]
