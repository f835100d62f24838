"""The ingest service: streams uploads to storage, records them, announces them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import asyncpg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from contracts.records import ErrorBody, FileRecord
from imuflow import db, kafka, metrics, runner
from imuflow.auth import User
from imuflow.logs import fields
from imuflow.lostevents import LostEventCheck
from imuflow.outbox import OutboxRelay
from imuflow.readiness import Readiness, broker_check, postgres_check, storage_check
from imuflow.settings import Settings
from imuflow.storage import Storage, StorageError, open_storage
from imuflow.supervision import TaskSupervisor
from imuflow.web import (
    AppSettings,
    CurrentUser,
    Pool,
    database_unavailable,
    health_router,
    install_cors,
    install_error_shape,
    install_origin_guard,
    install_query_attribution,
    readiness_report,
)
from services.ingest import early, repository, tus, tus_expiry, tus_headers, tus_repository
from services.ingest.acceptance import StoredUpload, accept_stored, dump, parse_options
from services.ingest.limits import LimitExceeded, UploadLimiter
from services.ingest.multipart import UploadRejected, receive_upload
from services.ingest.storage import UploadSink

log = logging.getLogger("imuflow.ingest")
STALE_UPLOAD_SECONDS = 6 * 3600  # a 4 GiB upload takes minutes; any older unfinished one is dead


def create_app(settings: Settings) -> FastAPI:
    """Build the ingest app; resources are opened in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.pool = await db.create_pool(settings.database_url)
        # Each running tus PATCH holds one connection for its advisory lock: a pool of their own.
        app.state.lock_pool = await db.create_pool(settings.database_url, min_size=0, max_size=64)
        app.state.hashes = tus.RunningHashes()
        app.state.storage = open_storage(settings)
        app.state.limiter = UploadLimiter(
            settings.upload_rate_per_minute, settings.upload_burst, settings.max_concurrent_uploads
        )
        producer = kafka.producer(settings)
        supervisor = TaskSupervisor(
            "ingest", asyncio.Event(), grace=settings.stop_grace, on_failure=runner.stop_serving
        )
        # Ready without the broker: uploads wait in the outbox (SPEC §7).
        app.state.readiness = Readiness(
            {
                "postgres": postgres_check(app.state.pool),
                "broker": broker_check(producer),
                "storage": storage_check(app.state.storage),
            },
            required=frozenset({"postgres", "storage"}),
        )
        supervisor.start("readiness", app.state.readiness.run)
        supervisor.start(
            "outbox-relay", OutboxRelay(settings, app.state.pool, producer, starts_producer=True).run
        )
        supervisor.start("topic-keeper", partial(kafka.keep_topics, settings))  # broker restarted empty
        supervisor.start("lost-events", LostEventCheck(settings, app.state.pool, producer).run)
        supervisor.start("tus-expiry", partial(tus_expiry.run, settings, app.state.pool, app.state.storage))
        supervisor.start("early-sweep", partial(early.sweep, app.state.pool, app.state.storage))
        sweeping = asyncio.create_task(_sweep(app.state.pool, app.state.storage), name="storage-sweep")
        try:
            yield
        finally:
            sweeping.cancel()
            await asyncio.gather(sweeping, return_exceptions=True)
            await supervisor.stop()
            await producer.stop()
            await app.state.lock_pool.close()
            await app.state.pool.close()
            await app.state.storage.close()

    app = FastAPI(title="imuflow ingest", version="1", lifespan=lifespan)
    install_error_shape(app)
    install_origin_guard(app, settings)
    install_query_attribution(app)
    install_cors(
        app,
        settings,
        methods=["HEAD", "PATCH"],
        headers=tus_headers.REQUEST_HEADERS,
        expose=tus_headers.EXPOSED_HEADERS,
    )
    app.include_router(health_router(readiness_report))
    app.include_router(tus.router())

    @app.post(
        "/api/files",
        status_code=202,
        response_model=FileRecord,
        responses={
            200: {"model": FileRecord, "description": "the same bytes were uploaded before"},
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            429: {"model": ErrorBody},
            503: {"model": ErrorBody},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "format": {"type": "string"},
                                "sensor": {"type": "string"},
                                "timezone": {"type": "string"},
                                "allow_duplicate": {"type": "boolean"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def upload(request: Request, user: CurrentUser, pool: Pool, cfg: AppSettings) -> JSONResponse:
        """Stream a multipart upload (field `file`) to storage and queue it for parsing."""
        limiter: UploadLimiter = request.app.state.limiter
        try:
            limiter.acquire(user.id)
        except LimitExceeded as exc:
            metrics.UPLOADS.labels("rejected").inc()
            raise HTTPException(429, exc.detail, {"Retry-After": str(exc.retry_after)}) from exc
        try:
            return await _store_upload(request, user, pool, cfg)
        finally:
            limiter.release(user.id)

    return app


async def _store_upload(request: Request, user: User, pool: asyncpg.Pool, cfg: Settings) -> JSONResponse:
    """Receive, store, deduplicate and record one upload (a large one as it streams)."""
    file_id = uuid.uuid4()
    storage: Storage = request.app.state.storage
    declared = request.headers.get("content-length", "")
    recorder = early.EarlyRecord(pool, storage, cfg, user.id, int(declared) if declared.isdigit() else None)
    try:
        sink = await UploadSink.open(storage, file_id, cfg.max_upload_bytes)
    except StorageError as exc:
        raise HTTPException(503, "the upload storage is unavailable; try again shortly") from exc
    try:
        form = await receive_upload(request, sink, recorder.observe if recorder.enabled else None)
        options = parse_options(form.fields)
        if sink.size == 0:
            raise UploadRejected(400, "the file is empty")
        await sink.finish()
        finished = await recorder.finish(sink, options) if recorder.started else None
    except UploadRejected as exc:
        await recorder.fail(sink, exc.detail)
        await sink.discard()
        metrics.UPLOADS.labels("rejected").inc()
        log.info("upload rejected", extra=fields(reason=exc.detail, status=exc.status))
        raise HTTPException(exc.status, exc.detail) from exc
    except StorageError as exc:
        await recorder.fail(sink, "the upload storage failed")
        await sink.discard()
        log.warning("upload storage failed", extra=fields(error=str(exc), action="upload"))
        raise HTTPException(503, "the upload storage is unavailable; try again shortly") from exc
    except repository.StorageUnavailable as exc:
        await recorder.fail(sink, "Postgres was unavailable at its end")
        await sink.discard()
        raise database_unavailable(exc) from exc
    except BaseException:
        await recorder.fail(sink, "the upload was interrupted")
        await sink.discard()
        raise
    if finished is not None:
        status, record = finished
        return JSONResponse(dump(record), status_code=status)
    stored = StoredUpload(
        # A record made early and removed (options after the file) leaves its id to its
        # fenced parse: this one gets a new id over the same stored bytes.
        file_id=uuid.uuid4() if recorder.started else file_id,
        user_id=user.id,
        filename=form.filename,
        size=sink.size,
        sha256=sink.sha256,
        uri=sink.uri,
        first_bytes=sink.first_bytes,
        options=options,
    )
    status, record = await accept_stored(pool, storage, cfg, stored, sink.discard)
    return JSONResponse(record, status_code=status)


async def _sweep(pool: asyncpg.Pool, storage: Storage) -> None:
    """Once at start: abort uploads an ingest killed mid-body left (older than any live one).

    Resumable uploads are left alone: they expire on their own clock (services/ingest/tus_expiry.py).
    """
    try:
        keep = frozenset(await tus_repository.unfinished_ids(pool))
        removed = await storage.sweep(STALE_UPLOAD_SECONDS, keep)
    except (StorageError, OSError, repository.StorageUnavailable) as exc:
        log.warning("could not sweep unfinished uploads", extra=fields(error=str(exc), action="sweep"))
        return
    if removed:
        log.info("unfinished uploads removed", extra=fields(count=removed, action="sweep"))
