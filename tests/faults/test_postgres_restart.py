"""Postgres restarts in the middle of a job: the job completes and nothing is lost or doubled.
Runs on a private embedded Postgres: the shared server must never be restarted by a test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imuflow import db
from imuflow.stack.postgres import EmbeddedPostgres, start_postgres
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import FAST_JOB_ENV, synth_csv, wait_checkpoint, wait_for, wait_terminal
from tests.servers import SettingsFactory
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(240)]
SAMPLES = 500_000
BATCH = 2_000


@pytest.fixture
async def private_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """An embedded Postgres of this test alone, migrated."""
    pg = await asyncio.to_thread(start_postgres, tmp_path / "pg")
    try:
        await db.migrate(pg.url)
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


async def test_postgres_restart_mid_job(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    service_stack: StartStack,
    private_postgres: EmbeddedPostgres,
) -> None:
    url = private_postgres.url
    settings = settings_factory(database_url=url)
    stack = await service_stack(settings, env={**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": str(BATCH)})
    token = await make_token(url, "alice")
    path = synth_csv(tmp_path / "big.csv", SAMPLES)
    file_id = (await upload(stack.ingest_url, token, path)).json()["id"]
    await wait_checkpoint(url, file_id, 20, timeout=60)

    await asyncio.to_thread(private_postgres.stop)
    await asyncio.sleep(3.0)  # every service sees the outage: failed writes, dead pools
    restarted = await asyncio.to_thread(start_postgres, tmp_path / "pg")
    try:
        assert restarted.url == url
        final = await wait_terminal(url, file_id, timeout=120)
        assert final.status == "completed", final
        assert (final.samples, final.distinct) == (SAMPLES, SAMPLES)
        assert final.resume_samples == SAMPLES
        # The progress consumer and the outbox relays came back too: every batch is logged.
        await wait_for(
            url,
            "SELECT count(*) = $2 FROM streaming_processing_logs WHERE file_id = $1::uuid",
            file_id,
            SAMPLES // BATCH,
            timeout=60,
            what="a complete batch log",
        )
        # And a new upload after the restart goes through end to end.
        again = synth_csv(tmp_path / "again.csv", 50_000)
        second = (await upload(stack.ingest_url, token, again)).json()["id"]
        after = await wait_terminal(url, second, timeout=60)
        assert (after.status, after.samples, after.distinct) == ("completed", 50_000, 50_000)
    finally:
        await stack.supervisor.stop()  # before the server goes, or the services log noise
        await asyncio.to_thread(restarted.stop)
