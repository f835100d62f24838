"""Segments: an S3 upload stored once and readable while it streams
(imuflow/storage/segments.py), on SeaweedFS.

The reader runs in a thread as the parser's does, while the writer is still sending parts.
A committed upload is its manifest and segments, read by `open` like any object; every
other path that ends an upload (abort, delete, sweep of a killed writer) leaves no
segment, which the bucket's listing shows.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid

import pytest

from imuflow.storage import S3Storage
from imuflow.storage.s3 import PART
from imuflow.storage.segments import UploadStopped, segment_key
from services.parser.growing import UploadEnd
from tests.objectstore import leftovers
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _names(keys: list[str]) -> list[str]:
    return sorted(k.rsplit("/", 1)[-1] for k in keys)


async def test_read_while_written_then_stored_once_and_read_like_any_object(s3_store: S3Storage) -> None:
    data = os.urandom(2 * PART + 12345)
    name = str(uuid.uuid4())
    writer = await s3_store.create(name)
    assert writer.keep_segments()
    end = UploadEnd()
    # the declared size: an upper bound, as ingest's
    reader = await s3_store.open_growing(s3_store.uri(name), len(data) + 1000, end)
    head = asyncio.ensure_future(asyncio.to_thread(reader.read, PART))
    await writer.write(data[: PART + 100])  # one part: its segment is readable
    assert await asyncio.wait_for(head, 30) == data[:PART]
    objects, uploads = await leftovers(s3_store)
    assert _names(objects) == [f"{name}.seg.0"] and uploads == []  # no multipart copy of it
    rest = asyncio.ensure_future(asyncio.to_thread(reader.read, -1))
    await asyncio.sleep(0.3)
    assert not rest.done()  # waits for bytes not stored yet
    await writer.write(data[PART + 100 :])
    await writer.commit()
    await asyncio.sleep(0.3)
    assert not rest.done()  # all bytes are stored, but the record does not say the end yet
    end.finish(len(data))
    got = data[:PART] + await asyncio.wait_for(rest, 30)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    reader.close()
    objects, uploads = await leftovers(s3_store)
    assert (_names(objects), uploads) == ([name, f"{name}.seg.0", f"{name}.seg.1", f"{name}.seg.2"], [])
    assert await s3_store.exists(s3_store.uri(name))
    stored = await s3_store.open(s3_store.uri(name))
    assert stored.seek(0, os.SEEK_END) == len(data)
    stored.seek(PART - 10)  # a read across two segments
    assert await asyncio.to_thread(stored.read, 20) == data[PART - 10 : PART + 10]
    stored.seek(0)
    assert hashlib.sha256(await asyncio.to_thread(stored.read)).digest() == hashlib.sha256(data).digest()
    stored.close()
    client = await s3_store.client()
    manifest = await client.get_object(Bucket=s3_store.bucket, Key=s3_store.key(name))
    async with manifest["Body"] as body:  # what another S3 client sees at the upload's key
        assert b"an upload stored as segments" in await body.read()
    await asyncio.sleep(1.1)  # S3 times have whole seconds
    assert await s3_store.sweep(0) == 0  # a stored upload's segments are not a killed writer's
    await s3_store.delete([s3_store.uri(name)])
    assert await leftovers(s3_store) == ([], [])


async def test_a_stopped_upload_stops_its_reader_and_abort_leaves_nothing(s3_store: S3Storage) -> None:
    name = str(uuid.uuid4())
    writer = await s3_store.create(name)
    assert writer.keep_segments()
    await writer.write(os.urandom(PART + 1))
    end = UploadEnd()
    reader = await s3_store.open_growing(s3_store.uri(name), 3 * PART, end)
    waiting = asyncio.ensure_future(asyncio.to_thread(reader.read, 2 * PART))
    await asyncio.sleep(0.3)
    end.stop("the client went away")
    with pytest.raises(UploadStopped, match="the client went away"):
        await asyncio.wait_for(waiting, 30)
    reader.close()
    await writer.abort()
    assert await leftovers(s3_store) == ([], [])


async def test_a_writer_that_sent_a_part_cannot_start_segments(s3_store: S3Storage) -> None:
    name = str(uuid.uuid4())
    writer = await s3_store.create(name)
    await writer.write(os.urandom(PART))
    assert not writer.keep_segments()
    await writer.abort()
    assert await leftovers(s3_store) == ([], [])


async def test_delete_and_sweep_remove_the_segments_a_killed_writer_left(s3_store: S3Storage) -> None:
    client = await s3_store.client()
    deleted, swept = str(uuid.uuid4()), str(uuid.uuid4())
    for name in (deleted, swept):  # what a killed ingest leaves: segments, and no object
        for n in range(2):
            await client.put_object(Bucket=s3_store.bucket, Key=segment_key(s3_store.key(name), n), Body=b"x")
    await s3_store.delete([s3_store.uri(deleted)])
    assert _names((await leftovers(s3_store))[0]) == [f"{swept}.seg.0", f"{swept}.seg.1"]
    assert await s3_store.sweep(3600) == 0  # too recent: a live upload's
    assert await s3_store.sweep(0, keep=frozenset({swept})) == 0
    await asyncio.sleep(1.1)  # S3 times have whole seconds
    assert await s3_store.sweep(0) == 1

    async def empty() -> bool:
        return await leftovers(s3_store) == ([], [])

    await until(empty, "the segments swept", within=10, every=0.2)
