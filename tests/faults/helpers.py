"""Helpers for fault-injection tests: a big synthesised file, database probes, process signals."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from imuflow import dberrors
from imuflow.stack.supervisor import Supervisor
from tests.e2e.helpers import upload
from tests.waiting import until

TERMINAL = ("completed", "failed", "cancelled")
# Small batches, no adaptation: many batch boundaries to crash between, in a few seconds.
FAST_JOB_ENV = {"IMUFLOW_BATCH_SIZE": "20000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}


def synth_csv(path: Path, samples: int) -> Path:
    """A generic CSV (time in s, accelerometer in g, gyroscope in deg/s) with `samples` rows."""
    rng = np.random.default_rng(samples)
    t = np.arange(samples) / 100.0
    values = rng.normal(0.0, 1.0, size=(samples, 6))
    with path.open("w") as f:
        f.write("time,ax (g),ay (g),az (g),gx (deg/s),gy (deg/s),gz (deg/s)\n")
        np.savetxt(f, np.column_stack([t, values]), fmt="%.5f", delimiter=",")
    return path


@dataclass(frozen=True)
class Stored:
    """What Postgres holds for one file."""

    status: str
    error_message: str | None
    samples: int
    distinct: int
    attempts: int
    resume_samples: int
    resume_batch_number: int


async def stored(database_url: str, file_id: str) -> Stored:
    """The file's status, checkpoint and sample counts (total and distinct sample_index)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT status, error_message, attempts, resume_samples, resume_batch_number "
            "FROM imu_data_files WHERE id = $1::uuid",
            file_id,
        )
        counts = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT sample_index) AS d "
            "FROM imu_samples WHERE file_id = $1::uuid",
            file_id,
        )
    finally:
        await conn.close()
    assert row is not None, f"file {file_id} not in the database"
    return Stored(
        row["status"],
        row["error_message"],
        counts["n"],
        counts["d"],
        row["attempts"],
        row["resume_samples"],
        row["resume_batch_number"],
    )


async def fetchval(database_url: str, query: str, *args: Any) -> Any:
    """One value from a one-shot connection (tests poll with it)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def wait_for(
    database_url: str, query: str, *args: Any, timeout: float, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll `query` until it returns a truthy value; fail after `timeout` seconds."""

    async def answer() -> Any:
        try:
            return await fetchval(database_url, query, *args)
        except dberrors.DRIVER as exc:  # the server may be restarting in the test
            return _Refused(exc)

    return await until(answer, what or query, within=timeout, every=interval)


class _Refused:
    """A driver error seen while polling: falsy, so polling goes on, and named on failure."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return repr(self.error)


async def wait_terminal(database_url: str, file_id: str, timeout: float) -> Stored:
    """Wait until the job ends (completed, failed or cancelled) and return what is stored."""
    await wait_for(
        database_url,
        "SELECT status = ANY($2::text[]) FROM imu_data_files WHERE id = $1::uuid",
        file_id,
        list(TERMINAL),
        timeout=timeout,
        what=f"file {file_id} to end",
    )
    return await stored(database_url, file_id)


async def wait_checkpoint(database_url: str, file_id: str, batches: int, timeout: float) -> int:
    """Wait until at least `batches` batches are committed; return the resume batch number."""
    value: int = await wait_for(
        database_url,
        "SELECT resume_batch_number FROM imu_data_files WHERE id = $1::uuid AND resume_batch_number >= $2",
        file_id,
        batches,
        timeout=timeout,
        what=f"{batches} committed batches",
    )
    return value


async def busy_and_queued(
    ingest_url: str,
    database_url: str,
    token: str,
    directory: Path,
    samples: tuple[int, int],
    *,
    checkpoint_within: float,
) -> tuple[str, str]:
    """With one parser slot: a job past its 5th checkpoint holding it, and a second waiting
    in `queued` behind it, its event on the broker (made of `samples` busy, queued). Their ids."""
    busy_samples, queued_samples = samples
    busy = await _accepted(ingest_url, token, synth_csv(directory / "busy.csv", busy_samples))
    await wait_checkpoint(database_url, busy, 5, timeout=checkpoint_within)
    queued = await _accepted(ingest_url, token, synth_csv(directory / "queued.csv", queued_samples))
    await wait_for(
        database_url,
        "SELECT status = 'queued' FROM imu_data_files WHERE id = $1::uuid",
        queued,
        timeout=20,
        what="the second upload's event on the broker",
    )
    return busy, queued


async def _accepted(ingest_url: str, token: str, path: Path) -> str:
    response = await upload(ingest_url, token, path)
    assert response.status_code == 202, response.text
    file_id: str = response.json()["id"]
    return file_id


def service_pid(supervisor: Supervisor, name: str) -> int:
    """The pid of a supervised service's current process."""
    state = supervisor.services[name]
    assert state.pid is not None and state.process is not None and state.process.returncode is None, (
        f"{name} is not running"
    )
    return state.pid


def kill(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal one process by pid (only processes this test started)."""
    os.kill(pid, sig)


async def wait_restarted(supervisor: Supervisor, name: str, old_pid: int, timeout: float = 30.0) -> int:
    """Wait until the supervisor runs a new process for `name`; return its pid."""

    async def new_pid() -> int | None:
        state = supervisor.services[name]
        running = state.process is not None and state.process.returncode is None
        return state.pid if running and state.pid not in (None, old_pid) else None

    return await until(new_pid, f"{name} restarted", within=timeout)


async def kill_and_wait_restarted(supervisor: Supervisor, name: str, timeout: float = 30.0) -> int:
    """SIGKILL a supervised service's process; return the pid of the one the supervisor starts."""
    pid = service_pid(supervisor, name)
    kill(pid)
    return await wait_restarted(supervisor, name, pid, timeout=timeout)
