"""kill -9 the parser mid-file with the upload in S3: each new attempt resumes by a ranged
GET at its checkpoint's byte offset, and the job ends exact (no sample twice, none lost)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import kill, service_pid, synth_csv, wait_terminal
from tests.objectstore import S3Server
from tests.servers import SettingsFactory
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(300)]
SAMPLES = 400_000  # ~25 MB: the checkpoints fall in different 8 MiB blocks
BATCH = 10_000
KILLS = 3


async def test_parser_killed_mid_file_resumes_from_s3_exact(
    tmp_path: Path,
    settings_factory: SettingsFactory,
    s3_server: S3Server,
    s3_prefix: str,
    service_stack: StartStack,
    database_url: str,
) -> None:
    path = synth_csv(tmp_path / "big.csv", SAMPLES)
    settings = settings_factory(**s3_server.settings(s3_prefix))
    env = {
        "IMUFLOW_BATCH_SIZE": str(BATCH),
        "IMUFLOW_ADAPTIVE_BATCHING": "false",
        "IMUFLOW_MAX_ATTEMPTS": "20",
        "IMUFLOW_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "IMUFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "IMUFLOW_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    }
    stack = await service_stack(settings, env=env)
    token = await make_token(database_url, "alice")
    response = await upload(stack.ingest_url, token, path)
    assert response.status_code == 202, response.text
    file_id = response.json()["id"]
    query = (
        "SELECT status, attempts, resume_batch_number, resume_offset FROM imu_data_files WHERE id = $1::uuid"
    )
    offsets: list[int] = []
    conn = await asyncpg.connect(database_url)
    try:
        for n in range(KILLS):
            # Kill once this attempt has committed a few batches past the last kill.
            deadline = time.monotonic() + 60
            while True:
                row = await conn.fetchrow(query, file_id)
                if row["attempts"] == n + 1 and row["resume_batch_number"] >= 3 * (n + 1):
                    break
                assert row["status"] in ("uploaded", "queued", "parsing"), row
                assert time.monotonic() < deadline, row
                await asyncio.sleep(0.005)
            offsets.append(row["resume_offset"])
            kill(service_pid(stack.supervisor, "parser"))
        final = await wait_terminal(database_url, file_id, timeout=120)
    finally:
        await conn.close()
    assert final.status == "completed", final
    assert (final.samples, final.distinct) == (SAMPLES, SAMPLES), final
    assert final.attempts == KILLS + 1
    assert all(o > 0 for o in offsets) and offsets == sorted(offsets), offsets
