"""A progress service frozen inside its apply transaction (SIGSTOP, a paused VM) does not
block the parser of that file for long: Postgres ends the transaction after the hold
timeout, releasing the file's row lock, and the parser's checkpoint goes through."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from contracts import events
from imuflow import db
from imuflow.settings import Settings
from services.progress import applier
from tests.common.test_lostevents import upload_row
from tests.ops.jobs import make_user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
HOLD_MS = 1500


async def test_a_frozen_apply_transaction_releases_the_row_lock(test_settings: Settings) -> None:
    pool = await db.create_pool(test_settings.database_url)
    try:
        async with pool.acquire() as conn:
            user_id = await make_user(conn, "frozen")
        file_id = await upload_row(pool, user_id)
        await pool.execute("UPDATE imu_data_files SET status = 'parsing', run = 1 WHERE id = $1", file_id)
        frozen = await db.connect(test_settings.database_url)
        tx = frozen.transaction()
        await tx.start()
        await applier.bound_transaction(frozen, str(HOLD_MS))
        await applier.apply(frozen, [_started(file_id, user_id)])  # the row is now locked
        # ... and the applier freezes here. A parser's checkpoint of the same row:
        t0 = time.monotonic()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '20s'")
            status = await conn.execute("UPDATE imu_data_files SET last_error = 'x' WHERE id = $1", file_id)
        waited = time.monotonic() - t0
        assert status == "UPDATE 1"
        assert HOLD_MS / 1000 * 0.5 < waited < 10, waited  # waited for the timeout, not for ever
        # Postgres ended the frozen session; asyncpg reports the termination notice that
        # arrived while idle as one of these, depending on when it reads it.
        ended = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, ConnectionError)
        with pytest.raises(ended):
            await frozen.execute("SELECT 1")
        assert frozen.is_closed() or not frozen.is_in_transaction()
        await asyncio.shield(frozen.close())
    finally:
        await pool.close()


def _started(file_id: uuid.UUID, user_id: uuid.UUID) -> events.ProgressEvent:
    return events.PROGRESS_EVENT.validate_python(
        {
            "type": "parse.started",
            "file_id": str(file_id),
            "user_id": str(user_id),
            "run": 1,
            "attempt": 1,
            "format": "csv",
            "bytes_total": 10,
            "started_at": datetime.now(UTC).isoformat(),
        }
    )
