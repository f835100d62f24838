"""Resumable uploads (tus 1.0.0, SPEC §7) at `/api/uploads`.

The state of every upload is a row of `tus_uploads` (services/ingest/tus_repository.py);
its bytes are a partial object in storage (imuflow/storage: a local `.tus` file, or S3
multipart parts plus a small tail). A PATCH holds the upload's advisory lock while its
body streams in (a second one at once: 409) and records its progress as it goes, so a
dropped connection or a killed ingest loses at most the last 8 MiB. When the last byte is
stored the upload becomes a file record through the same code as `POST /api/files`
(services/ingest/acceptance.py).

The whole file's sha256: hashlib cannot save a hash's state, so each ingest keeps the
running hash of the uploads it is receiving in memory, keyed by upload and offset. While
the chain is unbroken (the common case) the digest is free at the end; after a restart or
a PATCH taken by another ingest the finished object is read once more to hash it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.requests import ClientDisconnect

from contracts.records import ErrorBody
from imuflow import metrics
from imuflow.auth import User
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage import ObjectMissing, PartialState, PartialWriter, Storage, StorageError
from imuflow.web import AppSettings, CurrentUser, Pool, database_unavailable
from services.ingest import repository, tus_early, tus_headers, tus_repository
from services.ingest.acceptance import StoredUpload, accept_stored, parse_options
from services.ingest.limits import LimitExceeded, UploadLimiter
from services.ingest.multipart import UploadRejected
from services.ingest.tus_repository import TusUpload, UploadBusy

log = logging.getLogger("imuflow.ingest")
PENDING_RETRY_AFTER = 60
MAX_RUNNING_HASHES = 10_000
READ_BLOCK = 1 << 20
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 404, 409, 412, 413, 415, 429, 460, 503)
}


@dataclass
class RunningHashes:
    """This process's sha256 of the uploads it receives: upload id → (bytes hashed, hash)."""

    hashes: dict[uuid.UUID, tuple[int, Any]] = field(default_factory=dict)

    def take(self, upload: TusUpload) -> Any:
        """The running hash at the upload's offset, a new one at 0, else None (chain broken)."""
        entry = self.hashes.pop(upload.id, None)
        if upload.offset == 0:
            return hashlib.sha256()
        if entry is not None and entry[0] == upload.offset:
            return entry[1]
        return None

    def keep(self, upload_id: uuid.UUID, offset: int, running: Any) -> None:
        """Remember the hash of the first `offset` bytes (bounded: oldest forgotten)."""
        if running is None:
            return
        while len(self.hashes) >= MAX_RUNNING_HASHES:
            self.hashes.pop(next(iter(self.hashes)))
        self.hashes[upload_id] = (offset, running)


def _tus(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": tus_headers.VERSION, **(extra or {})}


def _refuse(exc: UploadRejected) -> HTTPException:
    return HTTPException(exc.status, exc.detail, _tus())


def _state(upload: TusUpload) -> PartialState:
    return PartialState(upload.offset, upload.s3_upload_id, list(upload.s3_parts), upload.tail_bytes)


def _apply(upload: TusUpload, state: PartialState) -> None:
    upload.offset = state.offset
    upload.s3_upload_id = state.upload_id
    upload.s3_parts = list(state.parts)
    upload.tail_bytes = state.tail_bytes


def router() -> APIRouter:
    """The tus routes; auth, OriginGuard and CORS come from the app like every route."""
    routes = APIRouter(tags=["uploads"])

    @routes.options("/api/uploads", status_code=204, responses={204: {"description": "tus discovery"}})
    async def discover(cfg: AppSettings) -> Response:
        """What this server speaks (no token needed); also answers the page's CORS preflight."""
        return Response(status_code=204, headers=tus_headers.discovery(cfg.max_upload_bytes))

    @routes.post("/api/uploads", status_code=201, responses={201: {"description": "created"}, **_ERRORS})
    async def create(request: Request, user: CurrentUser, pool: Pool, cfg: AppSettings) -> Response:
        """tus creation (and creation-with-upload): `Upload-Length`, `Upload-Metadata` → `Location`."""
        try:
            tus_headers.check_version(request.headers.get("tus-resumable"))
            if request.headers.get("upload-defer-length") is not None:
                raise UploadRejected(400, "Upload-Defer-Length is not supported: send Upload-Length")
            length = tus_headers.number(request.headers.get("upload-length"), "Upload-Length")
            if length == 0:
                raise UploadRejected(400, "the file is empty")
            if length > cfg.max_upload_bytes:
                raise UploadRejected(413, _too_large(cfg.max_upload_bytes))
            meta = tus_headers.metadata(request.headers.get("upload-metadata"))
            parse_options(meta)  # 400 now for a bad format, sensor or timezone, not after the bytes
        except UploadRejected as exc:
            metrics.UPLOADS.labels("rejected").inc()
            raise _refuse(exc) from exc
        limiter: UploadLimiter = request.app.state.limiter
        try:
            limiter.acquire(user.id)
        except LimitExceeded as exc:
            metrics.UPLOADS.labels("rejected").inc()
            raise HTTPException(429, exc.detail, _tus({"Retry-After": str(exc.retry_after)})) from exc
        try:
            return await _create(request, user, pool, cfg, length, meta)
        finally:
            limiter.release(user.id)

    @routes.head("/api/uploads/{upload_id}", responses={200: {"description": "the offset"}, **_ERRORS})
    async def offset(request: Request, upload_id: str, user: CurrentUser, pool: Pool) -> Response:
        """The upload's offset (and, once finished, the file record it became)."""
        upload = await _find(pool, upload_id, user)
        if upload.offset == upload.length and not upload.completed:
            upload = await _finish_locked(
                request, pool, upload
            )  # a crash between the last byte and the record
        elif not upload.completed:
            metrics.TUS_RESUMES.inc()
        return Response(status_code=200, headers=_offset_headers(upload, head=True))

    @routes.patch(
        "/api/uploads/{upload_id}", status_code=204, responses={204: {"description": "stored"}, **_ERRORS}
    )
    async def append(request: Request, upload_id: str, user: CurrentUser, pool: Pool) -> Response:
        """Append the body at `Upload-Offset` (`409` on another offset or a PATCH already running)."""
        upload = await _find(pool, upload_id, user)
        try:
            tus_headers.check_version(request.headers.get("tus-resumable"))
            if (
                request.headers.get("content-type", "").split(";")[0].strip()
                != tus_headers.OFFSET_CONTENT_TYPE
            ):
                raise UploadRejected(
                    415, f"send the bytes as Content-Type: {tus_headers.OFFSET_CONTENT_TYPE}"
                )
            at = tus_headers.number(request.headers.get("upload-offset"), "Upload-Offset")
            expected = tus_headers.checksum(request.headers.get("upload-checksum"))
        except UploadRejected as exc:
            raise _refuse(exc) from exc
        upload = await _patch(request, pool, upload, at, expected)
        return Response(status_code=204, headers=_offset_headers(upload))

    @routes.delete(
        "/api/uploads/{upload_id}", status_code=204, responses={204: {"description": "gone"}, **_ERRORS}
    )
    async def terminate(request: Request, upload_id: str, user: CurrentUser, pool: Pool) -> Response:
        """tus termination: the upload and its stored bytes are removed."""
        upload = await _find(pool, upload_id, user)
        try:
            async with tus_repository.writing(request.app.state.lock_pool, upload.id):
                if not upload.completed:
                    await tus_early.fail(pool, upload, "the client terminated it (DELETE)")
                    await _storage(request).abort_partial(str(upload.id), _state(upload))
                await tus_repository.delete(pool, upload.id)
        except UploadBusy as exc:
            raise HTTPException(
                409, "a PATCH of this upload is running; try again when it ends", _tus()
            ) from exc
        except StorageError as exc:
            raise HTTPException(503, "the upload storage is unavailable; try again shortly", _tus()) from exc
        request.app.state.hashes.hashes.pop(upload.id, None)
        log.info("upload terminated", extra=fields(upload_id=str(upload.id), action="terminate"))
        return Response(status_code=204, headers=_tus())

    return routes


def _storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


def _too_large(limit: int) -> str:
    return f"file larger than the {limit:,}-byte limit (IMUFLOW_MAX_UPLOAD_BYTES)"


def _offset_headers(upload: TusUpload, *, head: bool = False) -> dict[str, str]:
    headers = _tus({"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length)})
    if head:
        headers["Cache-Control"] = "no-store"
        headers["Upload-Metadata"] = tus_headers.encode_metadata(upload.metadata)
    if upload.completed and upload.file_id is not None:
        headers[tus_headers.FILE_ID_HEADER] = str(upload.file_id)
    else:
        headers["Upload-Expires"] = tus_headers.expires(upload.expires_at)
    return headers


async def _find(pool: Any, upload_id: str, user: User) -> TusUpload:
    try:
        parsed = uuid.UUID(upload_id)
    except ValueError as exc:
        raise HTTPException(404, "no such upload", _tus()) from exc
    try:
        upload = await tus_repository.get(pool, parsed, user.id)
    except repository.StorageUnavailable as exc:
        raise database_unavailable(exc, _tus()) from exc
    if upload is None:  # another user's, terminated or expired
        raise HTTPException(404, "no such upload (terminated, expired or never created)", _tus())
    return upload


async def _create(
    request: Request, user: User, pool: Any, cfg: Settings, length: int, meta: dict[str, str]
) -> Response:
    try:
        pending = await tus_repository.pending_count(pool, user.id)
        if pending >= cfg.max_pending_uploads:
            metrics.UPLOADS.labels("rejected").inc()
            raise HTTPException(
                429,
                f"at most {cfg.max_pending_uploads} unfinished uploads per user "
                "(IMUFLOW_MAX_PENDING_UPLOADS); finish, terminate or let one expire",
                _tus({"Retry-After": str(PENDING_RETRY_AFTER)}),
            )
        upload = await tus_repository.create(pool, uuid.uuid4(), user.id, length, meta, cfg.upload_expiry)
    except repository.StorageUnavailable as exc:
        raise database_unavailable(exc, _tus()) from exc
    location = f"/api/uploads/{upload.id}"
    log.info("upload created", extra=fields(upload_id=str(upload.id), size_bytes=length, action="create"))
    has_body = request.headers.get("content-type", "").startswith(tus_headers.OFFSET_CONTENT_TYPE)
    if has_body:  # creation-with-upload
        try:
            expected = tus_headers.checksum(request.headers.get("upload-checksum"))
        except UploadRejected as exc:
            raise _refuse(exc) from exc
        upload = await _patch(request, pool, upload, 0, expected)
    headers = _offset_headers(upload)
    headers.pop("Upload-Length")
    headers["Location"] = location
    return Response(status_code=201, headers=headers)


async def _patch(
    request: Request, pool: Any, upload: TusUpload, at: int, expected: tuple[str, bytes] | None
) -> TusUpload:
    """Take the lock, check the offset, stream the body in; the upload as it now stands."""
    cfg: Settings = request.app.state.settings
    try:
        async with tus_repository.writing(request.app.state.lock_pool, upload.id):
            fresh = await tus_repository.get(pool, upload.id, upload.user_id)  # the offset under the lock
            if fresh is None:
                raise HTTPException(404, "no such upload (terminated or expired)", _tus())
            if fresh.completed or at != fresh.offset:
                raise HTTPException(
                    409, f"Upload-Offset {at} does not match the upload's offset {fresh.offset}", _tus()
                )
            await _receive(request, pool, cfg, fresh, expected)
            if fresh.offset == fresh.length:
                fresh = await _finish(request, pool, fresh)
            return fresh
    except UploadBusy as exc:
        raise HTTPException(
            409, "another PATCH of this upload is running; HEAD for the offset", _tus()
        ) from exc
    except repository.StorageUnavailable as exc:
        raise database_unavailable(exc, _tus()) from exc
    except ObjectMissing as exc:
        await tus_repository.delete(pool, upload.id)
        raise HTTPException(410, f"the upload's stored bytes are gone ({exc}); start again", _tus()) from exc
    except StorageError as exc:
        log.warning(
            "upload storage failed", extra=fields(upload_id=str(upload.id), error=str(exc), action="patch")
        )
        raise HTTPException(503, "the upload storage is unavailable; try again shortly", _tus()) from exc


async def _receive(
    request: Request, pool: Any, cfg: Settings, upload: TusUpload, expected: tuple[str, bytes] | None
) -> None:
    """Stream the body into storage, recording progress as it goes unless a checksum must be checked first."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and upload.offset + int(declared) > upload.length:
        raise HTTPException(413, "the body goes past Upload-Length", _tus())
    hashes: RunningHashes = request.app.state.hashes
    start = upload.offset
    running = hashes.take(upload)
    work = running.copy() if running is not None else None
    check = tus_headers.CHECKSUMS[expected[0]]() if expected else None
    early = tus_early.TusEarly(pool, _storage(request), cfg, upload)
    await early.begin()
    writer: PartialWriter = await _storage(request).resume(str(upload.id), _state(upload))
    written = upload.offset
    try:
        try:
            async for chunk in request.stream():
                if not chunk:
                    continue
                written += len(chunk)
                if written > upload.length:
                    raise HTTPException(413, "the body goes past Upload-Length", _tus())
                await writer.write(chunk)
                await early.observe(chunk, written)
                metrics.TUS_BYTES.inc(len(chunk))
                if work is not None:
                    work.update(chunk)
                if check is not None:
                    check.update(chunk)
                elif writer.due():
                    _apply(upload, await writer.checkpoint())
                    await tus_repository.save_progress(pool, upload, cfg.upload_expiry)
        except ClientDisconnect:
            if check is not None:  # nothing of an unchecked body is kept
                hashes.keep(upload.id, start, running)
                return
            _apply(upload, await writer.checkpoint())
            await tus_repository.save_progress(pool, upload, cfg.upload_expiry)
            hashes.keep(upload.id, upload.offset, work)
            log.info("upload interrupted", extra=fields(upload_id=str(upload.id), offset=upload.offset))
            return
        if check is not None and expected is not None and check.digest() != expected[1]:
            hashes.keep(upload.id, start, running)
            raise HTTPException(460, f"{expected[0]} checksum mismatch: the PATCH was discarded", _tus())
        _apply(upload, await writer.checkpoint())
        await tus_repository.save_progress(pool, upload, cfg.upload_expiry)
        hashes.keep(upload.id, upload.offset, work)
    finally:
        await writer.close()


async def _finish_locked(request: Request, pool: Any, upload: TusUpload) -> TusUpload:
    try:
        async with tus_repository.writing(request.app.state.lock_pool, upload.id):
            fresh = await tus_repository.get(pool, upload.id, upload.user_id)
            if fresh is None:
                raise HTTPException(404, "no such upload", _tus())
            return fresh if fresh.completed else await _finish(request, pool, fresh)
    except UploadBusy as exc:
        raise HTTPException(409, "the upload is being finished; try again shortly", _tus()) from exc
    except StorageError as exc:
        raise HTTPException(503, "the upload storage is unavailable; try again shortly", _tus()) from exc


async def _finish(request: Request, pool: Any, upload: TusUpload) -> TusUpload:
    """Every byte is stored: make the object final and record the file (as POST /api/files)."""
    storage = _storage(request)
    cfg: Settings = request.app.state.settings
    key = str(upload.id)
    uri = storage.uri(key)
    receiving = await tus_early.is_receiving(pool, upload.id)  # recorded at its first bytes
    existing = await repository.file_record(pool, upload.id, upload.user_id)
    if existing is None or receiving:
        if not await storage.exists(uri):
            writer = await storage.resume(key, _state(upload))
            try:
                uri = await writer.complete()
            finally:
                await writer.close()
        running = request.app.state.hashes.hashes.pop(upload.id, None)
        if running is not None and running[0] == upload.length:
            sha256 = running[1].hexdigest()
        else:
            sha256 = await _hash_stored(storage, uri)
            log.info("upload re-hashed after a break", extra=fields(upload_id=key, size_bytes=upload.length))
        await tus_repository.save_sha256(pool, upload.id, sha256)
        if receiving:
            try:
                return await tus_early.finish(pool, storage, upload, uri, sha256)
            except UploadRejected as exc:
                raise _refuse(exc) from exc
        first = await _first_bytes(storage, uri)
        stored = StoredUpload(
            file_id=upload.id,
            user_id=upload.user_id,
            filename=upload.metadata.get("filename"),
            size=upload.length,
            sha256=sha256,
            uri=uri,
            first_bytes=first,
            options=parse_options(upload.metadata),
        )

        async def discard() -> None:
            await storage.delete([uri])

        try:
            _, record = await accept_stored(pool, storage, cfg, stored, discard)
        except HTTPException as exc:
            await tus_repository.delete(pool, upload.id)  # its bytes are gone: the upload is over
            raise HTTPException(exc.status_code, exc.detail, _tus()) from exc
        file_id = uuid.UUID(str(record["id"]))
    else:
        file_id = upload.id
    await tus_repository.mark_completed(pool, upload.id, file_id)
    upload.completed, upload.file_id = True, file_id
    log.info("upload finished", extra=fields(upload_id=key, file_id=str(file_id), action="finish"))
    return upload


async def _hash_stored(storage: Storage, uri: str) -> str:
    reader = await storage.open(uri)

    def digest() -> str:
        sha = hashlib.sha256()
        with reader:
            while block := reader.read(READ_BLOCK):
                sha.update(block)
        return sha.hexdigest()

    return await asyncio.to_thread(digest)


async def _first_bytes(storage: Storage, uri: str) -> bytes:
    reader = await storage.open(uri)

    def head() -> bytes:
        with reader:
            return reader.read(4096)

    return await asyncio.to_thread(head)
