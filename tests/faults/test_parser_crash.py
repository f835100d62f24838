"""kill -9 the parser again and again mid-file: the job still ends exact (no sample twice, none lost)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import make_token, upload
from tests.faults.helpers import FAST_JOB_ENV, kill, service_pid, synth_csv, wait_for, wait_terminal
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("cpu"),
]
SAMPLES = 500_000
BATCH = 5_000  # 100 batches: many boundaries to crash between
KILLS = 4  # each costs a restart and a rejoin (~7 s on the embedded broker)


async def _wait_claim(conn: asyncpg.Connection, file_id: str, after: int, timeout: float = 60.0) -> int:
    """Wait for a delivery newer than attempt `after` to claim the job; return its attempt."""

    async def newer() -> int | None:
        query = "SELECT attempts FROM imu_data_files WHERE id = $1::uuid"
        attempts: int = await conn.fetchval(query, file_id)
        return attempts if attempts > after else None

    return await until(newer, f"an attempt after {after}", within=timeout, every=0.01)


async def _wait_batches(conn: asyncpg.Connection, file_id: str, more: int) -> asyncpg.Record:
    """Wait until `more` further batches are committed; return the file's status and checkpoint."""
    query = "SELECT status, resume_batch_number FROM imu_data_files WHERE id = $1::uuid"
    start = await conn.fetchrow(query, file_id)
    row = start
    deadline = time.monotonic() + 30.0
    while row["resume_batch_number"] < start["resume_batch_number"] + more and time.monotonic() < deadline:
        await asyncio.sleep(0.003)
        row = await conn.fetchrow(query, file_id)
    return row


async def test_parser_killed_repeatedly_ends_exact(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    path = synth_csv(tmp_path / "big.csv", SAMPLES)
    # Every delivery counts an attempt, crashes included: allow more than we kill.
    env = {
        **FAST_JOB_ENV,
        "IMUFLOW_BATCH_SIZE": str(BATCH),
        "IMUFLOW_MAX_ATTEMPTS": "100",
        "IMUFLOW_KAFKA_SESSION_TIMEOUT_MS": "3000",
        "IMUFLOW_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "IMUFLOW_KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    }
    stack = await service_stack(test_settings, env=env)
    token = await make_token(database_url, "alice")
    response = await upload(stack.ingest_url, token, path)
    assert response.status_code == 202, response.text
    file_id = response.json()["id"]

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills: list[tuple[int, int]] = []  # (attempt killed, batches committed when killed)
    kill_to_claim: list[float] = []
    conn = await asyncpg.connect(database_url)
    try:
        attempt = 0
        killed_at = 0.0
        while len(kills) < KILLS:
            attempt = await _wait_claim(conn, file_id, attempt)
            if kills:
                kill_to_claim.append(time.monotonic() - killed_at)
            # The first kill comes before any checkpoint; each later one after a random 1-5
            # more batches (so every kill is at a new boundary), within the next batch.
            row = await _wait_batches(conn, file_id, rng.randrange(1, 6) if kills else 0)
            await asyncio.sleep(rng.uniform(0.0, 0.01))
            assert row["status"] == "parsing", f"job {row['status']} after {len(kills)} kills (seed {seed})"
            kill(service_pid(stack.supervisor, "parser"))
            killed_at = time.monotonic()
            kills.append((attempt, row["resume_batch_number"]))
        final = await wait_terminal(database_url, file_id, timeout=120)
        # The batch log is written from the progress events, which travel through Kafka and
        # can land just after the completion: wait for it, then count (no batch twice).
        await wait_for(
            database_url,
            "SELECT count(*) >= $2 FROM streaming_processing_logs WHERE file_id = $1::uuid",
            file_id,
            SAMPLES // BATCH,
            timeout=30,
            what="a complete batch log",
        )
        log_rows = await conn.fetchval(
            "SELECT count(*) FROM streaming_processing_logs WHERE file_id = $1::uuid", file_id
        )
    finally:
        await conn.close()
    print(f"seed={seed} kills={kills} kill-to-next-claim s={[round(s, 1) for s in kill_to_claim]}")
    assert final.status == "completed", (final, seed)
    assert (final.samples, final.distinct) == (SAMPLES, SAMPLES), (final, seed)
    assert final.resume_samples == SAMPLES
    assert final.attempts == KILLS + 1
    assert len({batches for _, batches in kills}) == KILLS, kills  # each crash at another boundary
    # Every batch is logged once, however often a new attempt redid it.
    assert log_rows == final.resume_batch_number == SAMPLES // BATCH
