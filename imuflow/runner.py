"""Process entry points: JSON logs, signals, uvicorn, and a metrics/health server."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imuflow import logs, metrics, sentry
from imuflow.readiness import Report
from imuflow.settings import Settings
from imuflow.supervision import TaskDied

log = logging.getLogger(__name__)
# listen() queue: a storm of 5,000 reconnects within a second overflowed uvicorn's 2,048 and
# the dropped handshakes were retried a second later. The kernel caps it at somaxconn.
BACKLOG = 8192
# Collect the youngest generation every 20,000 net allocations, not 700. Each SSE stream
# keeps a few hundred objects alive for as long as it lasts, so with thousands of streams
# CPython's defaults ran a full collection (0.3-1.7 s with the loop stopped, 1.5 million
# objects) again and again while a storm's streams arrived: half the server's CPU.
# The services make almost no cyclic garbage (55 objects over a storm), so collecting
# later costs no memory to speak of.
GC_THRESHOLDS = (20_000, 10, 10)


def serve_app(service: str, app: FastAPI, settings: Settings, port: int) -> None:
    """Run a web service with uvicorn (which handles SIGTERM/SIGINT gracefully)."""
    logs.configure(service, settings.log_level)
    metrics.touch_consumer_groups(settings)
    proxies = [p.strip() for p in settings.trusted_proxies.split(",") if p.strip()]
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
        # X-Forwarded-Proto/-For only from IMUFLOW_TRUSTED_PROXIES (uvicorn's default trusts
        # 127.0.0.1, so any local process could make the session cookie `Secure` or not).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        log_config=None,
        access_log=False,
        # uvicorn's C event loop and HTTP parser, named (its "auto" takes them only when
        # they happen to be importable): a new SSE stream costs less server CPU than on
        # asyncio + h11, and a replica's reconnect storm pays that once per client.
        loop="uvloop",
        http="httptools",
        backlog=BACKLOG,
        timeout_graceful_shutdown=math.ceil(settings.stop_grace),
        lifespan="on",
    )
    server = uvicorn.Server(config)

    async def run() -> None:
        sentry.init(service, settings)  # inside the loop: the asyncio integration patches it
        tune_garbage_collector()
        await server.serve()

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(run())


def tune_garbage_collector() -> None:
    """Collect less often (GC_THRESHOLDS) and leave what is loaded by now out of every collection.

    `gc.freeze()` moves the objects of start-up (modules, the app, its routes) to a
    generation no collection walks; they live as long as the process anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def stop_serving() -> None:
    """Shut this web service down the way SIGTERM does: uvicorn's graceful shutdown, then
    the lifespan's (which stops its TaskSupervisor), and an exit with the signal (non-zero).

    The web services' `on_failure`: uvicorn's way to be stopped from inside is its signal
    handler, and the lifespan, where the supervisor lives, holds no handle on the server.
    """
    os.kill(os.getpid(), signal.SIGTERM)


def run_worker(service: str, settings: Settings, main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a worker coroutine until SIGTERM/SIGINT sets its stop event (exit 1 if it
    stopped because one of its tasks died, supervision.TaskDied)."""
    logs.configure(service, settings.log_level)
    metrics.touch_consumer_groups(settings)

    async def entry() -> None:
        sentry.init(service, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await main(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(entry())
    except TaskDied:
        sys.exit(1)  # logged when the task died; a failure exit for the orchestrator


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


async def start_metrics_server(
    settings: Settings,
    port: int,
    healthy: Callable[[], bool],
    ready: Callable[[], Report] | None = None,
) -> tuple[uvicorn.Server, asyncio.Task[None]] | None:
    """Serve /metrics, /healthz and /readyz; a taken port falls back to a free one (logged)."""
    if port == 0:
        return None
    if not _port_free(settings.host, port):
        with socket.socket() as sock:
            sock.bind((settings.host, 0))
            fallback = sock.getsockname()[1]
        log.warning("metrics port %d is taken; serving metrics on port %d instead", port, fallback)
        port = fallback

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> JSONResponse:
        if healthy():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable"}, status_code=503)

    async def readyz(_: Request) -> JSONResponse:
        report = ready() if ready is not None else Report(healthy(), {})
        return JSONResponse(report.body(), status_code=200 if report.ready else 503)

    routes = [Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]
    app = Starlette(routes=routes)
    config = uvicorn.Config(app, host=settings.host, port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name="metrics-server")
    log.info("metrics on http://%s:%d/metrics", settings.host, port)
    return server, task
