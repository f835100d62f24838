"""The progress service: applies progress events, streams them, serves the page and API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from imuflow import db, kafka
from imuflow.lostevents import LostEventCheck
from imuflow.outbox import OutboxRelay
from imuflow.readiness import Readiness, Report, broker_check, postgres_check, storage_check
from imuflow.settings import Settings
from imuflow.supervision import TaskSupervisor
from imuflow.web import health_router, install_error_shape
from services.progress import admin, api, export, lifecycle, pageconfig, session, summary
from services.progress.applier import ProgressApplier
from services.progress.multiplexer import Multiplexer
from services.progress.repository import ProgressRepository
from services.progress.watchdog import start_watchdog

STATIC = Path(__file__).parent / "static"


def create_app(settings: Settings) -> FastAPI:
    """Build the progress app; resources are opened in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        pool = await db.create_pool(settings.database_url, max_size=20)
        app.state.pool = pool
        app.state.repo = ProgressRepository(pool)
        app.state.mux = Multiplexer(settings.database_url, pool)
        producer = kafka.producer(settings)
        applier = ProgressApplier(settings, pool)
        supervisor = TaskSupervisor("progress")
        # Ready without the broker: retries and requeues wait in the outbox (SPEC §7).
        app.state.readiness = Readiness(
            {
                "postgres": postgres_check(pool),
                "broker": broker_check(producer),
                "storage": storage_check(settings.storage_dir, write=False),
            },
            required=frozenset({"postgres"}),
        )
        supervisor.start("readiness", app.state.readiness.run)
        supervisor.start("event-fanout", app.state.mux.run)
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
            await pool.close()

    async def ready(request: Request) -> Report:
        readiness: Readiness = request.app.state.readiness
        started = request.app.state.mux.started.is_set()
        return readiness.report(() if started else ["event fan-out not started"])

    app = FastAPI(title="imuflow progress", version="1", lifespan=lifespan)
    install_error_shape(app)
    app.include_router(health_router(ready))
    app.include_router(api.router)
    app.include_router(lifecycle.router)
    app.include_router(export.router)
    app.include_router(session.router)
    app.include_router(pageconfig.router)
    app.include_router(summary.router)
    app.include_router(admin.router)
    app.include_router(admin.page_router)
    if (STATIC / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
