"""The storage interface, the same tests on a local directory and on SeaweedFS (S3)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from imuflow.storage import ObjectMissing, S3Storage, Storage
from imuflow.storage.s3 import PART
from services.ingest.archive import extract, plan_archive
from services.ingest.storage import UploadSink
from tests.ingest.test_archive import PHYPHOX, phyphox_zip
from tests.objectstore import S3Server, stored_names

pytestmark = pytest.mark.timeout(120)


async def _store(storage: Storage, data: bytes, chunk: int = 64 * 1024) -> str:
    sink = await UploadSink.open(storage, uuid.uuid4(), len(data) + 1)
    for at in range(0, len(data), chunk):
        sink.write(data[at : at + chunk])
        await sink.drain()
    assert sink.sha256 == hashlib.sha256(data).hexdigest()
    return await sink.finish()


async def test_a_multipart_upload_reads_back_at_any_offset(storage: Storage) -> None:
    data = os.urandom(2 * PART + 12_345)  # three parts on S3
    uri = await _store(storage, data)
    assert storage.owns(uri) and uri.startswith(storage.url)
    assert await storage.exists(uri)
    f = await storage.open(uri)

    def reads() -> None:
        assert f.read(10) == data[:10]
        for offset in (PART - 3, 5, len(data) - 7, PART * 2 + 1):
            f.seek(offset)
            assert f.read(4096) == data[offset : offset + 4096]
        assert f.seek(-100, os.SEEK_END) == len(data) - 100
        assert f.read() == data[-100:] and f.read(5) == b""
        f.seek(0)
        assert b"".join(iter(lambda: f.read(1 << 20), b"")) == data

    try:
        await asyncio.to_thread(reads)
    finally:
        f.close()
    objects, partial = await stored_names(storage)
    assert partial == [] and len(objects) == 1


async def test_an_aborted_upload_leaves_nothing(storage: Storage) -> None:
    sink = await UploadSink.open(storage, uuid.uuid4(), 1 << 30)
    for _ in range(2 * PART // (1 << 20) + 1):  # two parts uploaded, a third buffered
        sink.write(os.urandom(1 << 20))
        await sink.drain()
    await sink.discard()
    assert await stored_names(storage) == ([], [])
    assert not await storage.exists(sink.uri)


async def test_a_stored_upload_discarded_is_deleted(storage: Storage) -> None:
    sink = await UploadSink.open(storage, uuid.uuid4(), 1 << 30)
    sink.write(b"a,b\n1,2\n")
    await sink.finish()
    await sink.discard()  # a duplicate: stored, then not wanted
    assert await stored_names(storage) == ([], [])


async def test_delete_removes_objects_and_only_those_named_by_ids(storage: Storage) -> None:
    uris = [await _store(storage, f"x{i}\n".encode()) for i in range(3)]
    await storage.delete([*uris[:2], storage.uri("not-an-id"), storage.uri(str(uuid.uuid4()))])
    objects, _ = await stored_names(storage)
    assert objects and all(o.endswith(uris[2].rsplit("/", 1)[-1]) for o in objects)
    await storage.delete(uris)
    assert await stored_names(storage) == ([], [])


async def test_a_missing_object_says_so(storage: Storage) -> None:
    uri = storage.uri(str(uuid.uuid4()))
    assert not await storage.exists(uri)
    with pytest.raises(ObjectMissing):
        await storage.open(uri)
    assert await storage.check() is None


async def test_a_phone_zip_is_planned_and_split_through_the_reader(storage: Storage, tmp_path: Path) -> None:
    source = phyphox_zip(tmp_path / "p.zip")
    uri = await _store(storage, source.read_bytes())
    f = await storage.open(uri)
    try:
        plan = await asyncio.to_thread(plan_archive, f, "p.zip", 1 << 30)
        assert plan is not None and len(plan.streams) == 3
        parts = await extract(f, plan, storage, 1 << 30)
    finally:
        f.close()
    for part in parts:
        child = await storage.open(part.uri)
        try:
            body = await asyncio.to_thread(child.read)
        finally:
            child.close()
        assert body == PHYPHOX[part.filename][0].read_bytes()
    objects, partial = await stored_names(storage)
    assert len(objects) == 4 and partial == []


async def test_a_gt3x_zip_reads_through_the_reader(storage: Storage) -> None:
    from tests.parser.formats.test_gt3x import make_gt3x, synthetic_log

    blob = make_gt3x(synthetic_log()[0])
    f = await storage.open(await _store(storage, blob))
    try:
        names = await asyncio.to_thread(lambda: zipfile.ZipFile(f).namelist())
    finally:
        f.close()
    assert names == ["info.txt", "log.bin"]


async def test_a_missing_bucket_is_created(s3_server: S3Server) -> None:
    bucket = f"made-{uuid.uuid4().hex[:8]}"
    store = s3_server.storage("uploads", bucket=bucket)
    try:
        uri = await _store(store, b"t,ax\n0,1\n")
        assert uri.startswith(f"s3://{bucket}/uploads/")
        assert await store.check() is None
        await store.delete([uri])
    finally:
        await store.close()


async def test_an_unreachable_store_is_not_ready() -> None:
    store = S3Storage(
        "s3://nowhere", endpoint_url="http://127.0.0.1:9", access_key_id="k", secret_access_key="s"
    )
    try:
        problem = await store.check()
    finally:
        await store.close()
    assert problem is not None and problem.startswith("storage:")


async def test_sweep_removes_unfinished_uploads_a_killed_writer_left(storage: Storage) -> None:
    writer = await storage.create(str(uuid.uuid4()))
    await writer.write(os.urandom(PART + 1))  # on S3, a multipart upload with one part
    kept = await _store(storage, b"t,ax\n0,1\n")
    assert await storage.sweep(3600) == 0  # younger than the limit: may still be alive
    assert await storage.sweep(0) == 1
    objects, partial = await stored_names(storage)
    assert partial == [] and len(objects) == 1 and kept.endswith(objects[0].rsplit("/", 1)[-1])


async def test_a_store_that_goes_away_mid_upload_is_a_storage_error(
    s3_server: S3Server, s3_prefix: str
) -> None:
    from imuflow.storage import StorageError

    store = s3_server.storage(s3_prefix)
    try:
        writer = await store.create(str(uuid.uuid4()))  # the bucket answered
        store._options["endpoint_url"] = "http://127.0.0.1:9"  # then the store is gone
        await store.close()
        with pytest.raises(StorageError, match="part 1"):
            await writer.write(os.urandom(PART))
        await writer.abort()  # nothing was created: a no-op, not an error
    finally:
        await store.close()


async def test_an_s3_upload_keeps_a_bounded_number_of_parts_in_flight(
    s3_server: S3Server, s3_prefix: str
) -> None:
    from imuflow.storage.s3 import CONTENT_TYPE, IN_FLIGHT

    store = s3_server.storage(s3_prefix)
    storing: set[int] = set()
    most = 0
    types: list[str] = []

    def sent(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        nonlocal most
        context["part"] = params["PartNumber"]
        storing.add(params["PartNumber"])
        most = max(most, len(storing))

    def answered(context: dict[str, Any], **_: Any) -> None:
        storing.discard(context["part"])

    def typed(request: Any, **_: Any) -> None:
        types.append(request.headers["Content-Type"].decode())  # the prepared request's bytes

    try:
        client = await store.client()
        client.meta.events.register("provide-client-params.s3.UploadPart", sent)
        client.meta.events.register("after-call.s3.UploadPart", answered)
        client.meta.events.register("before-send.s3.UploadPart", typed)
        data = os.urandom(5 * PART + 1)
        uri = await _store(store, data, chunk=1 << 20)
        assert most == IN_FLIGHT  # overlapped, and never more than the bound
        assert types == [CONTENT_TYPE] * 6  # SeaweedFS gzips a part it sniffs as text
        head = await client.head_object(Bucket=store.bucket, Key=store.key(uri.rsplit("/", 1)[-1]))
        assert head["ContentType"] == CONTENT_TYPE
        f = await store.open(uri)
        try:
            assert await asyncio.to_thread(f.read) == data
        finally:
            f.close()
    finally:
        await store.close()


async def test_a_part_failing_in_flight_aborts_the_upload_and_leaves_nothing(
    s3_server: S3Server, s3_prefix: str
) -> None:
    from botocore.exceptions import EndpointConnectionError

    from imuflow.storage import StorageError

    store = s3_server.storage(s3_prefix)

    def fail_third(params: dict[str, Any], **_: Any) -> None:
        if params["PartNumber"] == 3:
            raise EndpointConnectionError(endpoint_url=s3_server.endpoint_url)

    try:
        client = await store.client()
        client.meta.events.register("provide-client-params.s3.UploadPart", fail_third)
        sink = await UploadSink.open(store, uuid.uuid4(), 1 << 30)
        with pytest.raises(StorageError, match="part 3"):
            for _ in range(6 * PART // (1 << 20)):
                sink.write(os.urandom(1 << 20))
                await sink.drain()
            await sink.finish()
        await sink.discard()
        assert await stored_names(store) == ([], [])
    finally:
        await store.close()


async def test_a_cancelled_upload_waits_for_its_parts_and_leaves_nothing(
    s3_server: S3Server, s3_prefix: str
) -> None:
    store = s3_server.storage(s3_prefix)
    try:
        sink = await UploadSink.open(store, uuid.uuid4(), 1 << 30)

        two_in_flight = asyncio.Event()

        async def receive() -> None:
            while True:  # a client that never finishes; cancelled once two parts are in flight
                sink.write(os.urandom(1 << 20))
                if sink.size > 2 * PART:
                    two_in_flight.set()
                await sink.drain()

        task = asyncio.create_task(receive())
        await asyncio.wait_for(two_in_flight.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sink.discard()
        assert await stored_names(store) == ([], [])
    finally:
        await store.close()
