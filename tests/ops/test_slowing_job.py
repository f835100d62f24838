"""Early warning with a job that really slows down: midway through a parse, the test makes
every batch wait about a second for Postgres (it holds a SHARE lock on `imu_samples`, as a
stalled disk or a long-running query would), so the batches slow to a fraction of their
median rate. While the job still parses, well before the stuck rule (it is never requeued),
it is flagged `slowing` on the operator API, in `imuflow status` and in the gauge
`imuflow_slowing_jobs`; once the stall ends it completes with its exact count and the gauge
goes back to 0."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import FAST_JOB_ENV, fetchval, synth_csv, wait_terminal
from tests.ops.test_admin_api import sample
from tests.ops.test_cli_ops import imuflow
from tests.ops.test_dashboard_api import get, wait_for
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
BATCH = 1000
ROWS = 300 * BATCH
ENV = {**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": str(BATCH), "IMUFLOW_STUCK_AFTER": "60"}


async def test_a_job_that_slows_down_is_flagged_before_it_is_stuck(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env=ENV)
    token = await make_token(database_url, "dora")
    admin = await make_token(database_url, "root", admin=True)
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_ADMIN_TOKEN={admin}\n"
    )
    file_id = (await upload(stack.ingest_url, token, synth_csv(tmp_path / "slowing.csv", ROWS))).json()["id"]

    async def batches_done() -> bool:
        query = "SELECT resume_batch_number FROM imu_data_files WHERE id = $1::uuid"
        return int(await fetchval(database_url, query, file_id)) >= 15

    async def gauge() -> float:
        return sample((await get(f"{stack.progress_url}/metrics")).text, "imuflow_slowing_jobs")

    await wait_for(batches_done, within=60)
    assert await gauge() == 0
    stall = asyncio.Event()
    staller = asyncio.create_task(_stall_batches(database_url, stall))

    async def flagged() -> list[dict[str, Any]]:
        items = (await get(f"{stack.progress_url}/api/admin/slowing", admin)).json()["items"]
        return [j for j in items if j["file_id"] == file_id]

    try:
        (slowing,) = await wait_for(flagged, within=60)
        jobs = (await get(f"{stack.progress_url}/api/admin/jobs", admin)).json()["items"]
        job = next(j for j in jobs if j["id"] == file_id)
        # The watchdog sets the gauge every round (STUCK_AFTER / 10 = 6 s here).
        await wait_for(lambda: _at_least_one(gauge), within=30)
        code, status = await imuflow(data_dir, "status")
    finally:
        stall.set()
        await staller
    assert slowing["slow_batches"] >= 5 and slowing["recent_rate"] < slowing["median_rate"] / 3
    assert job["status"] == "parsing" and job["is_slowing"] and not job["is_stuck"]
    assert code == 0 and "slowing.csv" in status and "1 job(s) slowing" in status and file_id in status, (
        status
    )
    final = await wait_terminal(database_url, file_id, timeout=90)
    assert (final.status, final.samples, final.distinct) == ("completed", ROWS, ROWS), final
    # Flagged before the stuck rule: the job was never requeued, its one delivery finished it.
    assert (
        await fetchval(database_url, "SELECT attempts FROM imu_data_files WHERE id = $1::uuid", file_id) == 1
    )
    await wait_for(lambda: _is_zero(gauge), within=30)


async def _at_least_one(gauge: Any) -> bool:
    return bool(await gauge() >= 1)


async def _is_zero(gauge: Any) -> bool:
    return bool(await gauge() == 0)


async def _stall_batches(database_url: str, stop: asyncio.Event) -> None:
    """Hold a SHARE lock on imu_samples for 1 s at a time: each batch's COPY waits for it.

    The lock is asked for again at once: Postgres queues it behind the COPY that was waiting
    (granted at the release), so exactly that one batch gets through per second. A pause
    between the holds let two or three fast batches through, which is not a slowdown."""
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            async with conn.transaction():
                await conn.execute("LOCK TABLE imu_samples IN SHARE MODE")
                await asyncio.sleep(1.0)
    finally:
        await conn.close()
