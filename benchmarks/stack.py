"""The embedded stack for benchmarks: Postgres + Tansu in a temp dir, services under a supervisor.

`async with EmbeddedStack() as stack:` starts the servers, migrates and creates a user;
`await stack.start(env=..., services=...)` runs services (restartable with other env).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from imuflow import auth, db
from imuflow.settings import Settings
from imuflow.stack.broker import Broker, start_broker
from imuflow.stack.postgres import EmbeddedPostgres, start_postgres
from imuflow.stack.procs import free_port
from imuflow.stack.supervisor import SERVICES, Supervisor, service_specs, service_urls

CHUNK = 1024 * 1024


class EmbeddedStack:
    """Servers for the whole benchmark, services started and stopped per measurement."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="imuflow-bench-")
        self.dir = Path(self._tmp.name)
        self.pg: EmbeddedPostgres | None = None
        self.broker: Broker | None = None
        self.supervisors: dict[str, Supervisor] = {}
        self.token = ""

    async def __aenter__(self) -> EmbeddedStack:
        self.pg = await asyncio.to_thread(start_postgres, self.dir)
        self.broker = await start_broker(None, log_path=self.dir / "logs" / "broker.log")
        await db.migrate(self.pg.url)
        conn = await db.connect(self.pg.url)
        try:
            self.token = await auth.create_token(conn, "bench")
        finally:
            await conn.close()
        self.settings = Settings(
            data_dir=self.dir / "data",
            database_url=self.pg.url,
            kafka_bootstrap_servers=self.broker.bootstrap_servers,
            ingest_port=free_port(),
            progress_port=free_port(),
            parser_metrics_port=free_port(),
            kafka_session_timeout_ms=6_000,
            kafka_rebalance_timeout_ms=6_000,
            log_level="WARNING",
            max_concurrent_uploads=32,
        )
        urls = service_urls(self.settings)
        self.ingest_url, self.progress_url = urls["ingest"], urls["progress"]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for name in list(self.supervisors):
            await self.stop(name)
        if self.broker:
            self.broker.stop()
        if self.pg:
            self.pg.stop()
        self._tmp.cleanup()

    async def start(
        self,
        name: str,
        services: Sequence[str] = SERVICES,
        env: Mapping[str, str] | None = None,
        argv: Mapping[str, Sequence[str]] | None = None,
    ) -> Supervisor:
        """Run `services` under a supervisor called `name` and wait until they are healthy.

        `argv` replaces a service's command (benchmarks.untracked_parser for the parser)."""
        specs = [
            dataclasses.replace(spec, argv=list(argv[spec.name])) if argv and spec.name in argv else spec
            for spec in service_specs(self.settings, env, services)
        ]
        supervisor = Supervisor(specs, backoff_initial=0.2, grace=5.0)
        await supervisor.start()
        try:
            await supervisor.wait_healthy(within=90)
        except BaseException:
            await supervisor.stop()
            raise
        self.supervisors[name] = supervisor
        return supervisor

    async def stop(self, name: str) -> None:
        """Stop the services of supervisor `name`."""
        await self.supervisors.pop(name).stop()

    def process(self, service: str) -> psutil.Process:
        """The running process of a service."""
        for supervisor in self.supervisors.values():
            state = supervisor.services.get(service)
            if state is not None and state.pid is not None:
                return psutil.Process(state.pid)
        raise LookupError(service)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) used so far by each part of the stack.

        Less noisy than wall time on a shared machine: it counts what a part did, not
        how long it waited for a core. Postgres counts the postmaster and every backend
        alive now (the services' pooled connections live as long as they do).
        """
        procs: dict[str, list[psutil.Process]] = {}
        for service in SERVICES:
            with contextlib.suppress(LookupError, psutil.Error):
                procs[service] = [self.process(service)]
        if self.pg is not None:
            postmaster = int((self.pg.pgdata / "postmaster.pid").read_text().split()[0])
            root = psutil.Process(postmaster)
            procs["postgres"] = [root, *root.children(recursive=True)]
        if self.broker is not None:
            procs["broker"] = [psutil.Process(self.broker.process.pid)]
        procs["bench client"] = [psutil.Process()]
        used: dict[str, float] = {}
        for name, group in procs.items():
            total = 0.0
            for proc in group:
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
            used[name] = total
        return used

    @property
    def headers(self) -> dict[str, str]:
        """The bench user's Authorization header."""
        return {"Authorization": f"Bearer {self.token}"}

    async def upload(self, client: httpx.AsyncClient, path: Path) -> dict[str, Any]:
        """POST a file as multipart (a duplicate of an earlier upload is a new job)."""
        with path.open("rb") as f:
            resp = await client.post(
                f"{self.ingest_url}/api/files",
                headers=self.headers,
                files={"file": (path.name, f)},
                data={"allow_duplicate": "true"},
                timeout=300,
            )
        resp.raise_for_status()
        record: dict[str, Any] = resp.json()
        return record


async def sse_events(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> AsyncIterator[tuple[float, str, dict[str, Any]]]:
    """(receive time.time(), event type, record) of an SSE stream, parsed by hand."""
    async with client.stream("GET", url, headers=dict(headers), timeout=httpx.Timeout(10, read=None)) as resp:
        resp.raise_for_status()
        kind, data = "message", ""
        async for line in resp.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                yield time.time(), kind, json.loads(data)
                kind, data = "message", ""


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task and wait for it."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
