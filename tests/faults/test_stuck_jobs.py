"""Stuck jobs (the watchdog, STUCK_AFTER a few seconds): a parser that hangs without
checkpointing, and one that dies before its first checkpoint, are detected and requeued;
the job then completes exact."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import (
    FAST_JOB_ENV,
    fetchval,
    kill,
    service_pid,
    synth_csv,
    wait_checkpoint,
    wait_for,
    wait_terminal,
)
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(180)]
SAMPLES = 200_000  # 200 batches: the hang comes at batch 10, the kill right after the claim
BATCH = 1_000
ENV = {**FAST_JOB_ENV, "IMUFLOW_BATCH_SIZE": str(BATCH), "IMUFLOW_STUCK_AFTER": "3"}
REQUEUED = "SELECT last_error LIKE 'requeued:%' FROM imu_data_files WHERE id = $1::uuid"


async def test_hung_parser_is_detected_and_its_job_requeued(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env=ENV)
    token = await make_token(database_url, "alice")
    file_id = (await upload(stack.ingest_url, token, synth_csv(tmp_path / "big.csv", SAMPLES))).json()["id"]
    await wait_checkpoint(database_url, file_id, 10, timeout=60)
    pid = service_pid(stack.supervisor, "parser")
    kill(pid, signal.SIGSTOP)  # hangs: alive, holding its connections, checkpointing nothing
    try:
        await wait_for(database_url, REQUEUED, file_id, timeout=30, what="the watchdog's requeue")
    finally:
        kill(pid, signal.SIGCONT)
    final = await wait_terminal(database_url, file_id, timeout=90)
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (SAMPLES, SAMPLES)
    assert final.attempts >= 2  # the requeue was delivered and claimed again
    assert "stuck job requeued" in stack.logs["progress"].read_text()


async def test_parser_dead_before_first_checkpoint_is_requeued(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(test_settings, env=ENV, services=("ingest", "progress"))
    parser = await service_stack(test_settings, env=ENV, services=("parser",))
    token = await make_token(database_url, "alice")
    file_id = (await upload(stack.ingest_url, token, synth_csv(tmp_path / "big.csv", SAMPLES))).json()["id"]
    await wait_for(
        database_url,
        "SELECT attempts = 1 FROM imu_data_files WHERE id = $1::uuid",
        file_id,
        timeout=60,
        interval=0.005,
        what="the claim",
    )
    kill(service_pid(parser.supervisor, "parser"))  # right after the claim
    await parser.supervisor.stop()  # and no restart: only the watchdog can notice
    assert await fetchval(
        database_url, "SELECT resume_batch_number FROM imu_data_files WHERE id = $1::uuid", file_id
    ) in (0, 1, 2)
    await wait_for(database_url, REQUEUED, file_id, timeout=30, what="the watchdog's requeue")
    assert await fetchval(database_url, "SELECT status FROM imu_data_files WHERE id = $1::uuid", file_id) in (
        "queued",
        "parsing",
    )
    await service_stack(test_settings, env=ENV, services=("parser",))  # a parser comes back
    final = await wait_terminal(database_url, file_id, timeout=90)
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (SAMPLES, SAMPLES)
    await asyncio.sleep(0)
