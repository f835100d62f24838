"""A job whose handling crashes outside the job's own error handling is fetched again, not skipped.

Found when Postgres restarted under a parser: asyncpg raised InternalClientError (a pooled
connection dropped mid-operation) from the error bookkeeping itself, it escaped the
partition worker, and the consumer, already past the message, never came back to it: the
job stayed "parsing" until a watchdog requeue. Here the parser runs in this process with a
repository that crashes once on purpose (a fault injected in front of the real one; every
query still goes to the real Postgres).
"""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

import asyncpg
import pytest

from imuflow import db, dberrors, kafka
from imuflow.settings import Settings
from services.parser.repository import Claim, ParserRepository
from services.parser.worker import ParserWorker
from tests.e2e.helpers import DATA, make_token, upload
from tests.faults.helpers import wait_terminal
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
XIO = DATA / "xio_fusion_sensor_data.csv"


class CrashOnce(ParserRepository):
    """The real repository, except that the first claim raises what a dropped connection raised."""

    crashed = 0

    async def claim(self, file_id: UUID, run: int) -> Claim | None:
        if not self.crashed:
            self.crashed += 1
            raise asyncpg.InternalClientError("cannot switch to state 11; another operation is in progress")
        return await super().claim(file_id, run)


def test_a_dropped_connection_counts_as_a_driver_error() -> None:
    assert issubclass(asyncpg.InternalClientError, dberrors.DRIVER)
    assert dberrors.is_transient(asyncpg.InternalClientError("another operation is in progress"))


async def test_a_crashed_worker_fetches_its_message_again(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, services=["ingest"])
    pool = await db.create_pool(database_url)
    producer = kafka.producer(test_settings)
    await producer.start()
    repo = CrashOnce(pool)
    stop = asyncio.Event()
    consumer = asyncio.create_task(ParserWorker(test_settings, repo, producer).run(stop))
    try:
        token = await make_token(database_url, "alice")
        file_id = (await upload(stack.ingest_url, token, XIO)).json()["id"]
        final = await wait_terminal(database_url, file_id, timeout=120)
        assert repo.crashed == 1
        assert final.status == "completed", final.error_message
        assert final.samples == final.distinct == 13_514
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(consumer, 30)
        await producer.stop()
        await pool.close()
