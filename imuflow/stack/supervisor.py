"""Run the services as separate OS processes, restart the ones that die, stop them cleanly.

This is the orchestrator of the embedded stack (STYLE habit 6): a service that loses a
background task exits, and the supervisor restarts it with capped exponential backoff.
A service that stays up `stable_after` seconds gets its backoff reset, so one crash an
hour never escalates to the maximum delay. Tests reuse it to run the real services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.stack.procs import child_preexec, free_port

log = logging.getLogger("imuflow.stack.supervisor")

SERVICES = ("ingest", "parser", "progress")


class SupervisorError(RuntimeError):
    """Services did not become healthy; the message carries their log tails."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its command, environment, log file and health URL."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    health_url: str | None = None  # None: alive counts as healthy (unless `probe`)
    # A health check that is not an HTTP URL (the broker answers Kafka metadata).
    probe: Callable[[], Awaitable[bool]] | None = field(default=None, compare=False)


@dataclass
class ServiceState:
    """What the supervisor knows about one service right now."""

    spec: ServiceSpec
    pid: int | None = None
    starts: int = 0
    last_exit: int | None = None
    next_delay: float = 0.0
    healthy: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)


def imuflow_command() -> list[str]:
    """The `imuflow` console script next to this interpreter (so `ps` shows the name)."""
    script = Path(sys.executable).parent / "imuflow"
    if not script.exists():
        raise SupervisorError(f"{script} not found: run `pip install -e .` in this environment")
    return [str(script)]


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as an `IMUFLOW_*` environment variable (what a child process reads)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        env[f"IMUFLOW_{name.upper()}"] = text
    return env


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def service_urls(settings: Settings) -> dict[str, str]:
    """Base URL of ingest and progress, and the parser's metrics URL ('' when disabled)."""
    host = _url_host(settings.host)
    metrics = settings.parser_metrics_port
    return {
        "ingest": settings.ingest_url or f"http://{host}:{settings.ingest_port}",
        "progress": settings.progress_url or f"http://{host}:{settings.progress_port}",
        "parser": f"http://{host}:{metrics}" if metrics else "",
    }


def replica_name(index: int) -> str:
    """The supervisor's name of the `index`-th progress replica: progress, progress-2, ..."""
    return "progress" if index == 0 else f"progress-{index + 1}"


def replica_ports(first: int, replicas: int) -> list[int]:
    """`first` and `replicas - 1` other free ports, all distinct, for the progress replicas."""
    ports = [first]
    while len(ports) < replicas:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def replica_urls(host: str, ports: Sequence[int]) -> list[str]:
    """The URL of each progress replica listening on `ports` (what `IMUFLOW_PROGRESS_URLS` lists)."""
    return [f"http://{_url_host(host)}:{port}" for port in ports]


def service_specs(
    settings: Settings,
    env: Mapping[str, str] | None = None,
    services: Sequence[str] = SERVICES,
    *,
    progress_ports: Sequence[int] = (),
) -> list[ServiceSpec]:
    """Specs for `imuflow <service>` with the given settings (+ extra environment).

    `progress_ports` runs one progress replica per port (default: `settings.progress_port`);
    each gets its own port, log file and health check, and the same settings otherwise.
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith("IMUFLOW_")}
    child_env = {**base, **settings_env(settings), "PYTHONUNBUFFERED": "1", **(env or {})}
    host = _url_host(settings.host)
    urls = service_urls(settings)
    health = {
        # Health checks hit the port directly: ingest_url may be a public proxy address.
        "ingest": f"http://{host}:{settings.ingest_port}/readyz",
        "parser": f"{urls['parser']}/healthz" if urls["parser"] else None,
    }
    logs = settings.data_dir / "logs"
    specs = []
    for name in services:
        if name != "progress":
            specs.append(
                ServiceSpec(
                    name=name,
                    argv=[*imuflow_command(), name],
                    env=child_env,
                    log_path=logs / f"{name}.log",
                    health_url=health[name],
                )
            )
            continue
        for index, port in enumerate(progress_ports or [settings.progress_port]):
            replica = replica_name(index)
            specs.append(
                ServiceSpec(
                    name=replica,
                    argv=[*imuflow_command(), "progress"],
                    env={**child_env, "IMUFLOW_PROGRESS_PORT": str(port)},
                    log_path=logs / f"{replica}.log",
                    health_url=f"http://{host}:{port}/readyz",
                )
            )
    return specs


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64_000))
        text = f.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Keeps a set of services running until `stop()`; an async context manager."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        grace: float = 10.0,
    ) -> None:
        self.services = {spec.name: ServiceState(spec) for spec in specs}
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.grace = grace
        self._stopping = asyncio.Event()
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Supervisor:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Spawn every service and keep it running in a named background task."""
        self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)
        for state in self.services.values():
            state.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            name = f"run-{state.spec.name}"
            state.task = asyncio.create_task(self._keep_running(state), name=name)

    async def _spawn(self, spec: ServiceSpec) -> asyncio.subprocess.Process:
        with spec.log_path.open("ab") as out:
            _mark(out, spec.name, "spawn")
            return await asyncio.create_subprocess_exec(
                *spec.argv,
                env=dict(spec.env),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                # Own session: a terminal Ctrl-C reaches only `up`, which then stops the
                # services in order instead of racing their restarts.
                start_new_session=True,
                preexec_fn=child_preexec(),
            )

    async def _keep_running(self, state: ServiceState) -> None:
        spec = state.spec
        delay = self.backoff_initial
        while not self._stopping.is_set():
            try:
                proc = await self._spawn(spec)
            except OSError as exc:
                log.error("service spawn failed", extra=fields(service=spec.name, error=str(exc)))
                rc = None
            else:
                state.process, state.pid = proc, proc.pid
                state.starts += 1
                log.info(
                    "service started",
                    extra=fields(
                        service=spec.name,
                        pid=proc.pid,
                        action="spawn",
                        starts=state.starts,
                    ),
                )
                began = time.monotonic()
                rc = await self._wait_or_stop(proc)
                state.healthy = False
                if self._stopping.is_set():
                    return
                if time.monotonic() - began >= self.stable_after:
                    delay = self.backoff_initial
            state.last_exit, state.next_delay = rc, delay
            with spec.log_path.open("ab") as out:
                _mark(out, spec.name, "exited", rc=rc, restart_in=delay)
            log.warning(
                "service exited, restarting",
                extra=fields(service=spec.name, rc=rc, action="restart", delay=delay),
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, self.backoff_max)

    async def _wait_or_stop(self, proc: asyncio.subprocess.Process) -> int | None:
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not waiter.done():
            await self._terminate(proc)
        return await waiter

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the service's process group, SIGKILL it after the grace period."""
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.grace)
        except TimeoutError:
            log.warning("service ignored SIGTERM, killing", extra=fields(pid=proc.pid))
            _signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def check(self, name: str) -> bool:
        """One health check of a service (its URL answers 200, or it is alive if none)."""
        state = self.services[name]
        proc = state.process
        alive = proc is not None and proc.returncode is None
        if alive and state.spec.probe is not None:
            state.healthy = await state.spec.probe()
            return state.healthy
        if not alive or state.spec.health_url is None or self._http is None:
            state.healthy = alive
            return alive
        try:
            response = await self._http.get(state.spec.health_url)
            state.healthy = response.status_code == 200
        except httpx.HTTPError:
            state.healthy = False
        return state.healthy

    async def health(self) -> dict[str, bool]:
        """Health of every service, checked now."""
        names = list(self.services)
        results = await asyncio.gather(*(self.check(n) for n in names))
        return dict(zip(names, results, strict=True))

    async def wait_healthy(self, within: float = 60.0, interval: float = 0.2) -> None:
        """Return once every service is healthy; raise SupervisorError with log tails if not."""
        deadline = time.monotonic() + within
        while True:
            status = await self.health()
            if all(status.values()):
                return
            if time.monotonic() >= deadline:
                sick = [n for n, ok in status.items() if not ok]
                raise SupervisorError(
                    f"services not healthy within {within:.0f}s: {', '.join(sick)}\n" + self.describe(sick)
                )
            await asyncio.sleep(interval)

    def describe(self, names: Sequence[str] | None = None, lines: int = 30) -> str:
        """State and log tail of the named services (all by default), for error messages."""
        parts = []
        for name in names or list(self.services):
            st = self.services[name]
            parts.append(
                f"--- {name}: pid={st.pid} starts={st.starts} last_exit={st.last_exit} "
                f"health={st.spec.health_url} log={st.spec.log_path}\n" + log_tail(st.spec.log_path, lines)
            )
        return "\n".join(parts)

    async def stop(self) -> None:
        """Stop restarting and stop every service (SIGTERM, grace, SIGKILL), in parallel."""
        self._stopping.set()
        tasks = [s.task for s in self.services.values() if s.task is not None]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for state, result in zip(self.services.values(), results, strict=False):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("service task failed", extra=fields(service=state.spec.name, error=repr(result)))
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The service leads its own session, so the group also holds any helper it forked.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _mark(out: IO[bytes], service: str, action: str, **fields: object) -> None:
    """A supervisor JSON line in the service's log, so restarts show up where people look."""
    line = {
        "ts": datetime.now(UTC).isoformat(),
        "level": "info",
        "logger": "supervisor",
        "service": service,
        "action": action,
        **fields,
    }
    out.write((json.dumps(line) + "\n").encode())
    out.flush()
