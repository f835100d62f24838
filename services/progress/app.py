"""The progress service: applies progress events, streams them, serves the page and API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from imuflow import db, kafka, runner
from imuflow.lostevents import LostEventCheck
from imuflow.outbox import OutboxRelay
from imuflow.readiness import Readiness, Report, broker_check, postgres_check, storage_check
from imuflow.settings import Settings
from imuflow.storage import open_storage
from imuflow.supervision import TaskSupervisor
from imuflow.web import health_router, install_error_shape, install_origin_guard, install_query_attribution
from services.progress import admin, api, edge, export, lifecycle, pageconfig, preview, session, summary
from services.progress.applier import ProgressApplier
from services.progress.edgepublish import EdgePublisher
from services.progress.export import EXPORT_RETRY_AFTER
from services.progress.limits import UserSlots
from services.progress.multiplexer import Multiplexer
from services.progress.repository import ProgressRepository
from services.progress.retention import prune_forever
from services.progress.sse import STREAM_RETRY_AFTER
from services.progress.watchdog import start_watchdog

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings) -> FastAPI:
    """Build the progress app; resources are opened in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        pool = await db.create_pool(settings.database_url, max_size=20)
        app.state.pool = pool
        # Exports hold a connection for as long as a download takes: their own pool, so they
        # can never take the connections the applier, the relays and the API need.
        export_pool = await db.create_pool(
            settings.database_url, min_size=0, max_size=settings.export_pool_size
        )
        app.state.export_pool = export_pool
        app.state.exports = UserSlots(settings.max_concurrent_exports, "exports", EXPORT_RETRY_AFTER)
        app.state.streams = UserSlots(settings.max_streams_per_user, "event streams", STREAM_RETRY_AFTER)
        app.state.repo = ProgressRepository(pool)
        app.state.storage = open_storage(settings)
        edge_url = settings.sse_edge_publish_url
        edge = EdgePublisher(edge_url, settings.database_url) if edge_url else None
        app.state.mux = Multiplexer(settings.database_url, pool, settings.sse_replay_window, edge)
        producer = kafka.producer(settings)
        applier = ProgressApplier(settings, pool)
        supervisor = TaskSupervisor(
            "progress", asyncio.Event(), grace=settings.stop_grace, on_failure=runner.stop_serving
        )
        # Ready without the broker: retries and requeues wait in the outbox (SPEC §7).
        app.state.readiness = Readiness(
            {
                "postgres": postgres_check(pool),
                "broker": broker_check(producer),
                "storage": storage_check(app.state.storage),
            },
            required=frozenset({"postgres"}),
        )
        supervisor.start("readiness", app.state.readiness.run)
        supervisor.start("event-fanout", app.state.mux.run)
        supervisor.start("session-check", app.state.mux.watch_sessions)
        supervisor.start("event-retention", partial(prune_forever, app.state.repo, settings.event_retention))
        supervisor.start("progress-consumer", applier.run)
        supervisor.start("consumer-lag", applier.report_lag)
        supervisor.start("outbox-relay", OutboxRelay(settings, pool, producer, starts_producer=True).run)
        supervisor.start("topic-keeper", partial(kafka.keep_topics, settings))  # broker restarted empty
        supervisor.start("lost-events", LostEventCheck(settings, pool, producer).run)
        start_watchdog(app.state, settings, pool, supervisor)
        app.state.supervisor = supervisor
        try:
            yield
        finally:
            await supervisor.stop()
            await producer.stop()
            try:  # a download still streaming must not hold the shutdown up
                await asyncio.wait_for(export_pool.close(), 5)
            except TimeoutError:
                export_pool.terminate()
            await pool.close()
            await app.state.storage.close()

    async def ready(request: Request) -> Report:
        readiness: Readiness = request.app.state.readiness
        started = request.app.state.mux.started.is_set()
        return readiness.report(() if started else ["event fan-out not started"])

    app = FastAPI(title="imuflow progress", version="1", lifespan=lifespan)
    install_error_shape(app)
    install_origin_guard(app, settings)
    install_query_attribution(app)
    app.include_router(health_router(ready))
    app.include_router(api.router)
    app.include_router(lifecycle.router)
    app.include_router(export.router)
    app.include_router(session.router)
    app.include_router(pageconfig.router)
    app.include_router(summary.router)
    app.include_router(preview.router)
    app.include_router(admin.router)
    app.include_router(admin.page_router)
    app.include_router(edge.router)
    if (STATIC / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
