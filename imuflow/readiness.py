"""What `/readyz` reports: each dependency (`postgres`, `broker`, `storage`) `ok` or `down`.

A background task checks every dependency every CHECK_SECONDS, each bounded by
CHECK_TIMEOUT, and keeps the last answer; `/readyz` only reads it, so a probe (however
often a load balancer sends it) never waits on a dead server and never adds load to a
live one. Which dependencies a service needs to be ready is its own call (SPEC §7): the
parser needs all of them; ingest and progress stay ready while only the broker is down
(uploads and requeues wait in the outbox) and say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.producer import Producer
from imuflow.storage import Storage

log = logging.getLogger(__name__)
CHECK_SECONDS = 1.0
CHECK_TIMEOUT = 2.0
DEPENDENCIES = ("postgres", "broker", "storage")
Check = Callable[[], Awaitable[object]]
# Why a missing dependency matters, for the `detail` of a service that stays ready.
DEGRADED = {
    "broker": "broker down: new events wait in the outbox and are published when it is back",
    "storage": "storage down: uploads and exports fail until it is back",
}


def postgres_check(pool: asyncpg.Pool) -> Check:
    """Postgres answers `SELECT 1`."""

    async def check() -> object:
        return await pool.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)

    return check


def broker_check(producer: Producer) -> Check:
    """The broker answers a metadata request (on the producer's own connections)."""

    async def check() -> object:
        return await producer.client.fetch_all_metadata()

    return check


def storage_check(store: Storage) -> Check:
    """The upload store answers: the local directory is usable, or the S3 bucket answers."""

    async def check() -> object:
        problem = await store.check()
        if problem is not None:
            raise OSError(problem)
        return None

    return check


@dataclass(frozen=True)
class Report:
    """One `/readyz` answer."""

    ready: bool
    checks: Mapping[str, str]
    detail: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body: status, each dependency, and why (when something is down)."""
        body: dict[str, Any] = {"status": "ready" if self.ready else "unavailable", **self.checks}
        if self.detail:
            body["detail"] = self.detail
        return body


@dataclass
class Readiness:
    """The last known state of each dependency, refreshed by `run`."""

    checks: Mapping[str, Check]
    required: frozenset[str]
    state: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0

    async def refresh(self) -> None:
        """Check every dependency once, in parallel, each within CHECK_TIMEOUT."""
        names = list(self.checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(self.checks[n](), CHECK_TIMEOUT) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            was = self.state.get(name)
            now = "down" if isinstance(result, BaseException) else "ok"
            self.state[name] = now
            self.errors[name] = repr(result) if isinstance(result, BaseException) else ""
            if was is not None and was != now:
                level = logging.WARNING if now == "down" else logging.INFO
                log.log(
                    level,
                    "dependency %s is %s",
                    name,
                    now,
                    extra=fields(action="readiness", dependency=name, state=now, error=self.errors[name]),
                )
        self.checked_at = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every CHECK_SECONDS until `stop` is set."""
        while not stop.is_set():
            await self.refresh()
            await wait_any(stop, timeout=CHECK_SECONDS)

    def report(self, extra_problems: Iterable[str] = ()) -> Report:
        """Ready when every required dependency is ok (and no extra problem is given)."""
        checks = {name: self.state.get(name, "down") for name in DEPENDENCIES if name in self.checks}
        down = [name for name, state in checks.items() if state != "ok"]
        blocking = [name for name in down if name in self.required]
        problems = [f"{name} down" for name in blocking] + list(extra_problems)
        if problems:
            return Report(False, checks, "; ".join(problems))
        notes = [DEGRADED.get(name, f"{name} down") for name in down]
        return Report(True, checks, "; ".join(notes) or None)
