"""The soak's stack: a real `imuflow up` in a temp dir, and the processes chaos can kill.

The services, the embedded broker and the embedded Postgres are found as processes, so a
kill is a real SIGKILL of what `imuflow up` runs. `imuflow up` restarts a dead service
(and the embedded broker); Postgres is restarted here, as an operator's init system would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil

from imuflow.settings import read_env_file
from imuflow.stack.postgres import start_postgres
from imuflow.stack.procs import free_port

SERVICES = ("ingest", "parser", "progress")


class UpStack:
    """`imuflow up` run as a child process, with every port chosen free."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "IMUFLOW_DATA_DIR": str(data_dir),
            "IMUFLOW_INGEST_PORT": str(free_port()),
            "IMUFLOW_PROGRESS_PORT": str(free_port()),
            "IMUFLOW_PARSER_METRICS_PORT": str(free_port()),
            "IMUFLOW_LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.values: dict[str, str] = {}

    async def start(self, within: float = 180.0) -> None:
        """Start `imuflow up` and wait until it wrote stack.env."""
        imuflow = Path(sys.executable).parent / "imuflow"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = (self.data_dir / "up.out").open("ab")
        self.proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived child, started once
            [str(imuflow), "up"], env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        stack_env = self.data_dir / "stack.env"
        deadline = time.monotonic() + within
        while not stack_env.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"imuflow up did not start; see {self.data_dir / 'up.out'}")
            await asyncio.sleep(0.5)
        self.values = read_env_file(stack_env)

    def stop(self) -> None:
        """SIGTERM `imuflow up` (it stops everything it started) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def database_url(self) -> str:
        return self.values["IMUFLOW_DATABASE_URL"]

    @property
    def ingest_url(self) -> str:
        return self.values["IMUFLOW_INGEST_URL"]

    @property
    def progress_url(self) -> str:
        return self.values["IMUFLOW_PROGRESS_URL"]

    def _children(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def service(self, name: str) -> psutil.Process | None:
        """The running process of service `name`, if any."""
        for child in self._children():
            try:
                argv = child.cmdline()
            except psutil.Error:
                continue
            if len(argv) >= 2 and argv[-1] == name and Path(argv[-2]).name == "imuflow":
                return child
        return None

    def broker(self) -> psutil.Process | None:
        """The embedded broker's process, if running."""
        for child in self._children():
            try:
                if "tansu" in Path(child.cmdline()[0]).name:
                    return child
            except (psutil.Error, IndexError):
                continue
        return None

    def postgres(self) -> list[psutil.Process]:
        """The embedded postmaster and its backends (pg_ctl detaches them from `up`)."""
        pid_file = self.data_dir / "postgres" / "postmaster.pid"
        try:
            root = psutil.Process(int(pid_file.read_text().split()[0]))
            return [root, *root.children(recursive=True)]
        except (OSError, ValueError, IndexError, psutil.Error):
            return []

    async def restart_postgres(self) -> None:
        """Start the embedded Postgres again on its data dir (same socket, same URL)."""
        pg = await asyncio.to_thread(start_postgres, self.data_dir)  # forgets the dead server
        if pg.url != self.database_url:
            raise RuntimeError(f"Postgres came back at {pg.url}, not {self.database_url}")
        conn = await asyncpg.connect(self.database_url, timeout=10)  # it really answers
        await conn.close()


def kill(procs: list[psutil.Process]) -> int:
    """SIGKILL every process given; how many were alive."""
    killed = 0
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        except psutil.Error:
            pass
    return killed
