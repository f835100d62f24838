"""Uploads as objects in an S3-compatible store (`s3://bucket[/prefix]`), via aiobotocore.

Why aiobotocore (measured in docs/scaling.md): it gives the multipart calls one by one,
so ingest decides how many parts are in flight and aborts the upload itself on any
failure; it creates a missing bucket and lists unfinished multipart uploads (obstore does
neither).

Every object and part is sent as `binary/octet-stream` (what AWS S3 calls an object sent
without a type): SeaweedFS gzips each chunk of a part whose type it sniffs as text, which
for a CSV upload cost the store 2.5x the CPU to write and 7x to read (docs/scaling.md).

Reads bridge to the event loop that opened the reader: the parser's reader runs in a
worker thread and asks the loop for each block with `run_coroutine_threadsafe`, which
also gives read-ahead for free (the next block's GET runs while this one is parsed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import deque
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from imuflow.logs import fields
from imuflow.storage.base import ObjectMissing, PartialState, StorageError, is_file_id
from imuflow.storage.reader import BLOCK, RangedReader
from imuflow.storage.segments import (
    POLL,
    Layout,
    SegmentReader,
    UploadState,
    UploadStopped,
    layout_of,
    manifest,
    segment_key,
    segment_owner,
    segment_prefix,
)

log = logging.getLogger("imuflow.storage")

PART = 8 * 1024 * 1024  # S3 wants >= 5 MiB per part but the last; 8 MiB = 512 GiB at 10,000 parts
MIN_PART = 5 * 1024 * 1024  # S3's smallest part but the last
# Parts of one upload being stored at once. While they are, the next part fills from the
# request, so receiving and storing overlap. Memory per upload is constant whatever its
# size: (IN_FLIGHT + 1) x PART = 24 MiB of ours, plus aiohttp's copy of each part it sends
# (measured peak 41 MiB per upload; 25 MiB with one part in flight, ~10-15% slower into
# SeaweedFS on this machine: docs/scaling.md).
IN_FLIGHT = 2
# Not `application/octet-stream`, which SeaweedFS treats as no type and sniffs (a CSV part
# then gets gzipped chunk by chunk); AWS gives objects sent without a type this one.
CONTENT_TYPE = "binary/octet-stream"
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"NoSuchBucket"}


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix")."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"not an S3 storage URL: {url!r} (expected s3://bucket[/prefix])")
    return parsed.netloc, parsed.path.strip("/")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Writer:
    """A multipart upload with up to IN_FLIGHT parts being stored while the next one fills;
    nothing is created before the first part.

    With `keep_segments`, the upload is stored as segments instead (no multipart upload):
    each part is the object `<key>.seg.<n>`, readable as soon as it is stored, so the upload
    can be parsed while it streams, and commit adds the manifest `<key>` that makes it one
    object to every reader (imuflow/storage/segments.py). Each byte is written once: storing
    the parts and their segments doubled what the store wrote while the body streamed.
    Abort deletes the segments."""

    def __init__(self, storage: S3Storage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._storing: deque[asyncio.Task[dict[str, Any]]] = deque()  # oldest part first
        self._numbered = 0
        self._done = False
        self._segments = False
        self._size = 0  # bytes sent as parts or segments

    def keep_segments(self) -> bool:
        """Store the upload as segments; False once a part was sent as a multipart part."""
        if self._numbered:
            return self._segments
        self._segments = True
        return True

    async def write(self, data: bytes) -> None:
        """Buffer `data`; send a part each time one is full (waits while IN_FLIGHT are stored)."""
        self._raise_failed()
        self._buffer += data
        while len(self._buffer) >= PART:
            with memoryview(self._buffer) as view:  # one copy (a slice of the buffer would be two)
                part = bytes(view[:PART])
            del self._buffer[:PART]
            await self._send(part)

    async def _send(self, body: bytes) -> None:
        """Start storing `body` as the next part, after the oldest part when IN_FLIGHT are."""
        if self._upload_id is None and not self._segments:
            client = await self._storage.client()
            try:
                created = await client.create_multipart_upload(
                    Bucket=self._storage.bucket, Key=self._key, ContentType=CONTENT_TYPE
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(f"storing part 1 of the upload failed: {exc}") from exc
            self._upload_id = str(created["UploadId"])
        while len(self._storing) >= IN_FLIGHT:
            await self._settle_oldest()
        self._numbered += 1
        self._size += len(body)
        if self._segments:
            task = asyncio.create_task(self._put_segment(self._numbered - 1, body))
        else:
            task = asyncio.create_task(self._upload_part(self._numbered, body))
        task.add_done_callback(_retrieve)
        self._storing.append(task)

    async def _upload_part(self, number: int, body: bytes) -> dict[str, Any]:
        client = await self._storage.client()
        try:
            answer = await client.upload_part(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"storing part {number} of the upload failed: {exc}") from exc
        return {"PartNumber": number, "ETag": answer["ETag"]}

    async def _put_segment(self, index: int, body: bytes) -> dict[str, Any]:
        client = await self._storage.client()
        key = segment_key(self._key, index)
        try:
            await client.put_object(Bucket=self._storage.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"storing segment {index} of the upload failed: {exc}") from exc
        return {"Segment": index, "Size": len(body)}

    async def _delete_segments(self) -> None:
        """Remove the segments of an aborted upload (0 .. n-1, every part sent); a failure is
        left to `sweep`."""
        keys = [segment_key(self._key, n) for n in range(self._numbered)]
        try:
            await self._storage.delete_keys(keys)
        except StorageError as exc:
            log.warning(
                "could not delete an upload's segments",
                extra=fields(key=self._key, error=str(exc), action="delete_segments"),
            )

    async def _settle_oldest(self) -> None:
        """Wait for the oldest part in flight (its failure is this upload's).

        Shielded: a cancelled request must not cut a part off mid-flight (the abort that
        follows waits for it instead)."""
        part = await asyncio.shield(self._storing[0])
        self._storing.popleft()
        self._parts.append(part)

    def _raise_failed(self) -> None:
        """Fail at the next write, not only at the next wait, once any part failed."""
        for task in self._storing:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise cast(BaseException, task.exception())

    async def commit(self) -> None:
        """Complete the upload (a small object is one PUT; segments get their manifest)."""
        client = await self._storage.client()
        bucket = self._storage.bucket
        try:
            if not self._numbered:
                await client.put_object(
                    Bucket=bucket, Key=self._key, Body=bytes(self._buffer), ContentType=CONTENT_TYPE
                )
            elif self._segments:
                if self._buffer:
                    await self._send(bytes(self._buffer))  # the last segment, shorter
                while self._storing:
                    await self._settle_oldest()
                await put_manifest(client, bucket, self._key, self._numbered, self._size)
            else:
                if self._buffer:
                    await self._send(bytes(self._buffer))
                    self._buffer = bytearray()
                while self._storing:
                    await self._settle_oldest()
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"storing the upload failed: {exc}") from exc
        self._buffer = bytearray()
        self._done = True

    async def abort(self) -> None:
        """Abort the multipart upload so no part is left behind (idempotent).

        The parts still in flight are waited for first (each ends within the client's
        timeouts): a part the store finished after the abort could outlive it."""
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        if not self._numbered:
            return
        # Shielded: an abort that runs because the request was cancelled must finish
        # (its segments included: they are deleted once no part is in flight).
        await asyncio.shield(self._abort(list(self._storing), self._upload_id))
        self._storing.clear()

    async def _abort(self, storing: list[asyncio.Task[dict[str, Any]]], upload_id: str | None) -> None:
        await asyncio.gather(*storing, return_exceptions=True)
        if upload_id is None:  # stored as segments: no multipart upload to abort
            await self._delete_segments()
            return
        client = await self._storage.client()
        try:
            await client.abort_multipart_upload(
                Bucket=self._storage.bucket, Key=self._key, UploadId=upload_id
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "could not abort a multipart upload",
                extra=fields(key=self._key, upload_id=upload_id, error=str(exc), action="abort"),
            )


class S3PartialWriter:
    """One request's bytes of a resumable upload, as multipart parts of `<key>`.

    Bytes go to a spool file on disk (never memory); each time it holds a part's worth
    (8 MiB) it is stored as the next part. At a checkpoint what is left (the tail) becomes
    part of the upload too when it is at least S3's 5 MiB minimum, else it is stored as the
    small object `<key>.tail`, which the next request reads back into its spool: so another
    ingest, with no shared disk, can continue the upload.
    """

    def __init__(self, storage: S3Storage, key: str, state: PartialState, spool: BinaryIO) -> None:
        self._storage = storage
        self._key = key
        self._spool: BinaryIO | None = spool
        self._spooled = state.tail_bytes
        self._stored = state.offset - state.tail_bytes  # bytes in recorded parts
        self._part_done = False
        self.state = PartialState(state.offset, state.upload_id, list(state.parts), state.tail_bytes)

    @property
    def tail_key(self) -> str:
        return f"{self._key}.tail"

    async def write(self, data: bytes) -> None:
        """Spool; store the spool as the next part once it holds PART bytes."""
        spool = self._open_spool()
        spool.write(data)
        self._spooled += len(data)
        if self._spooled >= PART:
            await self._store_part()

    def _open_spool(self) -> BinaryIO:
        if self._spool is None:
            raise StorageError("write after close")
        return self._spool

    async def _store_part(self) -> None:
        spool = self._open_spool()
        spool.seek(0)
        body = await asyncio.to_thread(spool.read)  # one part at a time: parts follow checkpoints
        client = await self._storage.client()
        bucket = self._storage.bucket
        number = len(self.state.parts) + 1
        try:
            if self.state.upload_id is None:
                created = await client.create_multipart_upload(
                    Bucket=bucket, Key=self._key, ContentType=CONTENT_TYPE
                )
                self.state.upload_id = str(created["UploadId"])
            answer = await client.upload_part(
                Bucket=bucket, Key=self._key, UploadId=self.state.upload_id, PartNumber=number, Body=body
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"storing part {number} of the upload failed: {exc}") from exc
        self.state.parts.append({"PartNumber": number, "ETag": answer["ETag"], "Size": len(body)})
        self._stored += len(body)
        spool.seek(0)
        spool.truncate()
        self._spooled = 0
        self._part_done = True

    def due(self) -> bool:
        """True right after a part was stored (the spool is empty: nothing else to save)."""
        return self._part_done and self._spooled == 0

    async def checkpoint(self) -> PartialState:
        """Store the spool as a part (>= 5 MiB) or as the `<key>.tail` object."""
        self._part_done = False
        if self._spooled >= MIN_PART:
            await self._store_part()
            self._part_done = False
        elif self._spooled:
            spool = self._open_spool()
            spool.seek(0)
            body = await asyncio.to_thread(spool.read)  # < 5 MiB
            spool.seek(0, os.SEEK_END)
            client = await self._storage.client()
            try:
                await client.put_object(
                    Bucket=self._storage.bucket, Key=self.tail_key, Body=body, ContentType=CONTENT_TYPE
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(f"storing the upload's tail failed: {exc}") from exc
        self.state = PartialState(
            self._stored + self._spooled, self.state.upload_id, list(self.state.parts), self._spooled
        )
        return self.state

    async def complete(self) -> str:
        """The spool becomes the last part (or the whole object); complete; drop the tail object."""
        client = await self._storage.client()
        bucket = self._storage.bucket
        try:
            if self.state.upload_id is None:
                spool = self._open_spool()
                spool.seek(0)
                body = await asyncio.to_thread(spool.read)  # < 8 MiB: never a part was stored
                await client.put_object(Bucket=bucket, Key=self._key, Body=body, ContentType=CONTENT_TYPE)
            else:
                if self._spooled:
                    await self._store_part()
                parts = [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in self.state.parts]
                await client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=self._key,
                    UploadId=self.state.upload_id,
                    MultipartUpload={"Parts": parts},
                )
            await client.delete_object(Bucket=bucket, Key=self.tail_key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"completing the upload failed: {exc}") from exc
        await self.close()
        return f"s3://{bucket}/{self._key}"

    async def close(self) -> None:
        """Drop the spool file."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class S3Storage:
    """A bucket (and optional prefix) of an S3-compatible store."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        spool_dir: Path | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.spool_dir = spool_dir  # resumable uploads' tails (None: the system's temp dir)
        self.bucket, self.prefix = split_url(url)
        self._options: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            self._options["endpoint_url"] = endpoint_url
        if access_key_id:  # else botocore's own chain (environment, profile, instance role)
            self._options["aws_access_key_id"] = access_key_id
            self._options["aws_secret_access_key"] = secret_access_key
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._bucket_checked = False

    async def client(self) -> Any:
        """The aiobotocore client, created on first use (on the loop that uses it)."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    config = AioConfig(
                        s3={"addressing_style": "path"},
                        retries={"max_attempts": 3, "mode": "standard"},
                        connect_timeout=5,
                        read_timeout=60,
                        max_pool_connections=32,
                    )
                    maker = get_session().create_client("s3", config=config, **self._options)
                    client = await self._stack.enter_async_context(maker)
                    client.meta.events.register("before-sign.s3.UploadPart", _typed_part)
                    self._client = client
        return self._client

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def uri(self, key: str) -> str:
        """`s3://bucket/prefix/<key>`."""
        return f"s3://{self.bucket}/{self.key(key)}"

    def owns(self, uri: str) -> bool:
        """True for an `s3://` URI in this bucket."""
        parsed = urlparse(uri)
        return parsed.scheme == "s3" and parsed.netloc == self.bucket

    def _key_of(self, uri: str) -> str:
        if not self.owns(uri):
            raise StorageError(f"{uri!r} is not in {self.url}")
        return urlparse(uri).path.lstrip("/")

    async def ensure_bucket(self) -> None:
        """Create the bucket when it is missing and the credentials allow it."""
        if self._bucket_checked:
            return
        client = await self.client()
        try:
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) not in (*_MISSING, *_NO_BUCKET):
                raise StorageError(f"bucket {self.bucket}: {exc}") from exc
            try:
                await client.create_bucket(Bucket=self.bucket)
                log.info("bucket created", extra=fields(bucket=self.bucket, action="create_bucket"))
            except ClientError as create_exc:
                if _code(create_exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise StorageError(f"bucket {self.bucket} is missing: {create_exc}") from create_exc
        self._bucket_checked = True

    async def create(self, key: str) -> S3Writer:
        """Start a (lazy) multipart upload of `key`."""
        try:
            await self.ensure_bucket()
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable: {exc}") from exc
        return S3Writer(self, self.key(key))

    async def _layout(self, key: str) -> Layout:
        """The object's size and where its bytes are (itself, or its segments): one HEAD."""
        client = await self.client()
        try:
            head = await client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING or _code(exc) in _NO_BUCKET:
                raise ObjectMissing(key) from exc
            raise StorageError(f"reading {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable: {exc}") from exc
        return layout_of(int(head["ContentLength"]), head.get("Metadata") or {})

    async def _read(self, key: str, layout: Layout, start: int, end: int) -> bytes:
        """Bytes `start`..`end` of the object, from its segments if it is stored as such."""
        if layout.segments is None:
            return await self._range(key, start, end)
        pieces = layout.pieces(start, end)
        if len(pieces) == 1:  # a reader's aligned block: no join
            index, at, to = pieces[0]
            return await self._range(segment_key(key, index), at, to)
        return b"".join([await self._range(segment_key(key, n), at, to) for n, at, to in pieces])

    async def _range(self, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        client = await self.client()
        try:
            answer = await client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
            async with answer["Body"] as body:
                return cast(bytes, await body.read())
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectMissing(key) from exc
            raise StorageError(f"reading {key}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable: {exc}") from exc

    async def open(self, uri: str) -> BinaryIO:
        """A RangedReader; its reads must run off this loop's thread (they wait on it)."""
        key = self._key_of(uri)
        layout = await self._layout(key)
        loop = asyncio.get_running_loop()

        def fetch(start: int, end: int) -> Future[bytes]:
            if _on_loop(loop):
                raise RuntimeError("read an S3 object from a worker thread, not the event loop")
            return asyncio.run_coroutine_threadsafe(self._read(key, layout, start, end), loop)

        return cast(BinaryIO, RangedReader(fetch, layout.size, block=BLOCK, name=uri))

    async def open_growing(self, uri: str, estimate: int, upload: UploadState) -> BinaryIO:
        """A reader of an upload still being received (its segments, waited for)."""
        key = self._key_of(uri)
        loop = asyncio.get_running_loop()
        stored: list[Layout] = []  # the finished object's layout, once it is looked up

        def fetch(start: int, end: int) -> Future[bytes]:
            if _on_loop(loop):
                raise RuntimeError("read an S3 object from a worker thread, not the event loop")
            return asyncio.run_coroutine_threadsafe(self._segment(key, start, end, upload, stored), loop)

        return cast(BinaryIO, SegmentReader(fetch, estimate, upload, block=PART, name=uri))

    async def _segment(
        self, key: str, start: int, end: int, upload: UploadState, stored: list[Layout]
    ) -> bytes:
        """Bytes `start` (a multiple of PART) up to `end`: segment n, waited for while the
        upload is received (the last one is shorter: the reader then waits for the end)."""
        index = start // PART
        while upload.size is None:  # one GET per look: a waiting parser costs the store little
            try:
                return await self._range(segment_key(key, index), 0, PART)
            except ObjectMissing:
                pass
            if upload.stopped is not None:
                raise UploadStopped(upload.stopped)
            await asyncio.sleep(POLL)
        # The record says the upload ended: the object is complete, however it is stored
        # (segments with their manifest, or one object: an upload under 8 MiB is one PUT).
        if start >= upload.size:
            return b""
        if not stored:
            stored.append(await self._layout(key))
        return await self._read(key, stored[0], start, min(end, upload.size))

    async def exists(self, uri: str) -> bool:
        """True when the object is stored."""
        try:
            await self._layout(self._key_of(uri))
        except ObjectMissing:
            return False
        return True

    async def delete(self, uris: list[str]) -> None:
        """Delete the objects (one request per 1000); only keys that are file ids."""
        keys = []
        for uri in uris:
            key = self._key_of(uri) if self.owns(uri) else ""
            if not key or not is_file_id(key.rsplit("/", 1)[-1]):
                log.warning("not removing an unexpected location", extra=fields(uri=uri, action="delete"))
                continue
            keys.append(key)
        # The segments of an upload stored as such (or deleted while it was being received).
        for key in list(keys):
            keys += await self._list_keys(segment_prefix(key))
        await self.delete_keys(keys)

    async def _list_keys(self, prefix: str) -> list[str]:
        client = await self.client()
        found: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                found += [str(o["Key"]) for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"listing {prefix}* failed: {exc}") from exc
        return found

    async def delete_segments(self, uri: str) -> None:
        """Remove the segments of an upload whose ingest was killed (its sweep)."""
        await self.delete_keys(await self._list_keys(segment_prefix(self._key_of(uri))))

    async def delete_keys(self, keys: list[str]) -> None:
        """Delete these keys (one request per 1000; missing ones are fine)."""
        client = await self.client()
        for at in range(0, len(keys), 1000):
            chunk = keys[at : at + 1000]
            try:
                answer = await client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(f"deleting uploads failed: {exc}") from exc
            if answer.get("Errors"):
                raise StorageError(f"deleting uploads failed: {answer['Errors'][:3]}")

    async def resume(self, key: str, state: PartialState) -> S3PartialWriter:
        """Continue the multipart upload of `key`; its tail object is read back into a spool."""
        if not is_file_id(key):
            raise StorageError(f"not a file id: {key!r}")
        try:
            await self.ensure_bucket()
        except BotoCoreError as exc:
            raise StorageError(f"storage unreachable: {exc}") from exc
        if self.spool_dir is not None:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
        spool = cast(BinaryIO, tempfile.TemporaryFile(dir=self.spool_dir))  # noqa: SIM115 - closed by the writer
        writer = S3PartialWriter(self, self.key(key), state, spool)
        if state.tail_bytes:
            try:
                tail = await self._range(writer.tail_key, 0, state.tail_bytes)
            except BaseException:
                spool.close()
                raise
            if len(tail) != state.tail_bytes:
                spool.close()
                raise ObjectMissing(f"the tail of upload {key} is shorter than recorded")
            spool.write(tail)
        return writer

    async def abort_partial(self, key: str, state: PartialState) -> None:
        """Abort the multipart upload and delete the tail object."""
        client = await self.client()
        full = self.key(key)
        try:
            if state.upload_id is not None:
                with contextlib.suppress(ClientError):  # already aborted or completed
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=full, UploadId=state.upload_id
                    )
            await client.delete_object(Bucket=self.bucket, Key=f"{full}.tail")
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"removing the partial upload failed: {exc}") from exc

    async def sweep(self, older_than: float, keep: frozenset[str] = frozenset()) -> int:
        """Abort multipart uploads under the prefix initiated more than `older_than` s ago,
        except those whose name is in `keep` (resumable uploads, which expire on their own)."""
        client = await self.client()
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        prefix = f"{self.prefix}/" if self.prefix else ""
        aborted = 0
        paginator = client.get_paginator("list_multipart_uploads")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                name = upload["Key"].rsplit("/", 1)[-1]
                if upload["Initiated"] <= cutoff and is_file_id(name) and name not in keep:
                    await client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        # Segments a killed ingest left: those with no manifest (one listing of the prefix,
        # at ingest's start). A stored upload's segments sort after its manifest.
        stale, stored = [], set()
        async for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                owner = segment_owner(name)
                if owner is None:
                    stored.add(name)
                    continue
                ours = is_file_id(owner) and owner not in keep and owner not in stored
                if ours and item["LastModified"] <= cutoff:
                    stale.append(str(item["Key"]))
        await self.delete_keys(stale)
        return aborted + len({k.rsplit(".seg.", 1)[0] for k in stale})

    async def check(self) -> str | None:
        """None when the bucket answers (HEAD bucket: one cheap request)."""
        try:
            await asyncio.wait_for(self.ensure_bucket(), 3.0)
        except (StorageError, BotoCoreError, ClientError, TimeoutError) as exc:
            self._bucket_checked = False
            return f"storage: {exc or 'timed out'}"
        self._bucket_checked = False  # the next check asks the store again
        return None

    async def close(self) -> None:
        """Close the client's connections."""
        await self._stack.aclose()
        self._client = None


async def put_manifest(client: Any, bucket: str, key: str, count: int, size: int) -> None:
    """Make `count` stored segments holding `size` bytes the object `key`."""
    body, metadata = manifest(count, size, PART)
    await client.put_object(
        Bucket=bucket, Key=key, Body=body, ContentType="application/json", Metadata=metadata
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a part's failure as seen: a writer dropped unfinished (its upload is left for
    `sweep`) must not log "exception was never retrieved" later."""
    if not task.cancelled():
        task.exception()


def _typed_part(request: Any, **_: Any) -> None:
    """UploadPart has no ContentType parameter: set the header before signing."""
    if "Content-Type" in request.headers:
        del request.headers["Content-Type"]
    request.headers["Content-Type"] = CONTENT_TYPE


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
