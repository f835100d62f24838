"""Delete and re-parse: nothing left behind, no sample re-inserted, history kept."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from imuflow import db
from imuflow.settings import Settings
from services.parser.cursor import Cursor
from services.parser.formats.base import SampleBatch
from services.parser.repository import Fenced, ParserRepository
from services.progress.lifecycle import delete_family
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token, upload
from tests.faults.helpers import wait_for
from tests.stack import ServiceStack, StartStack

ACCEL = DATA / "phyphox_deadreckoning_Accelerometer.csv"
ACCEL_SAMPLES = 10_577


def _batch(start: int, n: int, end_offset: int) -> SampleBatch:
    values = np.full((n, 9), np.nan, dtype=np.float32)
    values[:, 0] = 1.0
    index = np.arange(start, start + n, dtype=np.int64)
    return SampleBatch(sample_index=index, t_ns=index * 10_000_000, values=values, end_offset=end_offset)


@pytest.mark.integration
async def test_a_parser_mid_batch_cannot_reinsert_samples_after_a_delete(database_url: str) -> None:
    """The batch in flight commits before the delete sees it; the next batch is fenced."""
    await make_token(database_url, "alice")
    pool = await db.create_pool(database_url, max_size=4)
    try:
        user_id = await pool.fetchval("SELECT id FROM users WHERE name = 'alice'")
        file_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO imu_data_files (id, user_id, filename, size_bytes, sha256, storage_uri, status,"
            " attempts) VALUES ($1, $2, 'a.csv', 100, 'x', 'file:///nonexistent', 'queued', 0)",
            file_id,
            user_id,
        )
        repo = ParserRepository(pool)
        claim = await repo.claim(file_id, 1)  # as a parser takes the job
        assert claim is not None
        await repo.store_batch(claim, _batch(0, 100, 10), Cursor(1, 100, 0, []))
        # Batch 2 is mid-flight: its checkpoint is updated, its samples not yet committed.
        parser = await db.connect(database_url)
        tx = parser.transaction()
        await tx.start()
        status = await parser.execute(
            "UPDATE imu_data_files SET resume_batch_number = 2 WHERE id = $1 AND status = 'parsing'", file_id
        )
        assert status == "UPDATE 1"
        await parser.execute(
            "INSERT INTO imu_samples (file_id, sample_index) SELECT $1, g FROM generate_series(100, 199) g",
            file_id,
        )
        deleting = asyncio.create_task(delete_family(pool, file_id, user_id))
        await asyncio.sleep(0.5)
        assert not deleting.done(), "the delete must wait for the batch in flight"
        await tx.commit()
        await parser.close()
        assert await asyncio.wait_for(deleting, 10) == ["file:///nonexistent"]
        assert await pool.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", file_id) == 0
        # The parser's next batch finds no row to checkpoint: fenced, samples rolled back.
        with pytest.raises(Fenced):
            await repo.store_batch(claim, _batch(200, 100, 30), Cursor(3, 300, 0, []))
        assert await pool.fetchval("SELECT count(*) FROM imu_samples WHERE file_id = $1", file_id) == 0
        assert await pool.fetchval("SELECT count(*) FROM imu_data_files WHERE id = $1", file_id) == 0
    finally:
        await pool.close()


async def _completed(stack: ServiceStack, token: str, file_id: str) -> dict[str, Any]:
    seen = await asyncio.wait_for(
        follow_until_done(f"{stack.progress_url}/api/files/{file_id}/events", token), 120
    )
    return seen[-1].record


async def _leftovers(database_url: str, ids: list[str]) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {col} = ANY($1::uuid[])", ids)
            for table, col in (
                ("imu_data_files", "id"),
                ("imu_samples", "file_id"),
                ("streaming_processing_logs", "file_id"),
                ("file_events", "file_id"),
            )
        }
        counts["outbox"] = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE key = ANY($1::text[]) AND published_at IS NULL", ids
        )
    finally:
        await conn.close()
    return counts


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_delete_leaves_nothing(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env={"IMUFLOW_UPLOAD_BURST": "60"})
    token = await make_token(database_url, "alice")
    other = await make_token(database_url, "mallory")
    record = (await upload(stack.ingest_url, token, ACCEL)).json()
    assert (await _completed(stack, token, record["id"]))["status"] == "completed"
    async with httpx.AsyncClient(timeout=60) as client:
        url = f"{stack.progress_url}/api/files/{record['id']}"
        assert (await client.delete(url, headers=bearer(other))).status_code == 404
        assert (await _leftovers(database_url, [record["id"]]))["imu_samples"] == ACCEL_SAMPLES
        response = await client.delete(url, headers=bearer(token))
        assert response.status_code == 204, response.text
        assert (await client.delete(url, headers=bearer(token))).status_code == 404
        assert (await client.get(url, headers=bearer(token))).status_code == 404
    assert set((await _leftovers(database_url, [record["id"]])).values()) == {0}
    assert list(stack.settings.storage_dir.iterdir()) == []

    # A ZIP: its streams go with it, whatever state they are in; via the CLI this time.
    from tests.ingest.test_archive import phyphox_zip

    path = phyphox_zip(tmp_path / "p.zip")
    parent = (await upload(stack.ingest_url, token, path)).json()
    family = [parent["id"], *parent["children"]]
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    (data_dir / "stack.env").write_text(f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_TOKEN={token}\n")
    from tests.progress.test_export import _cli

    assert await asyncio.to_thread(_cli, ["--data-dir", str(data_dir), "delete", parent["id"]]) == 0
    assert set((await _leftovers(database_url, family)).values()) == {0}
    await asyncio.sleep(2)  # a parser that was mid-file has stopped, not re-inserted
    assert set((await _leftovers(database_url, family)).values()) == {0}
    assert list(stack.settings.storage_dir.iterdir()) == []


def _long_csv(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        f.write("time_s,ax,ay,az\n")
        for i in range(rows):
            f.write(f"{i / 100:.2f},{(i % 97) / 10:.1f},0.5,9.8\n")
    return path


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_reparse_changes_the_result_and_keeps_the_history(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(
        test_settings, env={"IMUFLOW_BATCH_SIZE": "3000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}
    )
    token = await make_token(database_url, "alice")
    record = (await upload(stack.ingest_url, token, ACCEL)).json()
    first = await _completed(stack, token, record["id"])
    assert first["run"] == 1 and first["sample_count"] == ACCEL_SAMPLES
    async with httpx.AsyncClient(timeout=60, headers=bearer(token)) as client:
        url = f"{stack.progress_url}/api/files/{record['id']}"
        bad = await client.post(f"{url}/reparse", json={"timezone": "Mars/Olympus"})
        assert bad.status_code == 400
        response = await client.post(f"{url}/reparse", json={"sensor": "gyroscope"})
        assert response.status_code == 200, response.text
        queued = response.json()
        # The answer is read after the re-parse committed, and its event may already have
        # reached a parser (same machine, under load): queued, or just claimed by then.
        assert queued["run"] == 2 and queued["status"] in ("queued", "parsing"), queued
        if queued["status"] == "queued":
            assert queued["samples_processed"] == 0, queued
        second = await _completed(stack, token, record["id"])
        assert second["run"] == 2 and second["sample_count"] == ACCEL_SAMPLES
        # The batch log comes from the progress events through Kafka and can trail the
        # completion by a moment: wait for run 2's last batch, bounded.
        await wait_for(
            database_url,
            "SELECT coalesce(sum(samples_in_batch), 0) >= $2 FROM streaming_processing_logs "
            "WHERE file_id = $1::uuid AND run = 2",
            record["id"],
            ACCEL_SAMPLES,
            timeout=10,
            what="run 2's batch log",
        )
        log = (await client.get(f"{url}/batches")).json()["items"]
    assert {e["run"] for e in log} == {1, 2}
    assert sum(e["samples_in_batch"] for e in log if e["run"] == 2) == ACCEL_SAMPLES
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchrow(
            "SELECT count(*) AS n, count(ax) AS a, count(gx) AS g FROM imu_samples WHERE file_id = $1",
            uuid.UUID(record["id"]),
        )
    finally:
        await conn.close()
    assert dict(stored) == {"n": ACCEL_SAMPLES, "a": 0, "g": ACCEL_SAMPLES}  # now read as a gyroscope

    # A re-parse while the job runs: the old run is fenced, the new one stores each sample once.
    rows = 150_000
    big = _long_csv(tmp_path / "long.csv", rows)
    running = (await upload(stack.ingest_url, token, big)).json()
    async with httpx.AsyncClient(timeout=60, headers=bearer(token)) as client:
        url = f"{stack.progress_url}/api/files/{running['id']}"
        for _ in range(200):
            state = (await client.get(url)).json()
            if state["status"] == "parsing" and state["samples_processed"] > 0:
                break
            await asyncio.sleep(0.05)
        response = await client.post(f"{url}/reparse", json={"format": "auto"})
        assert response.status_code == 200 and response.json()["run"] == 2
    final = await _completed(stack, token, running["id"])
    assert final["status"] == "completed" and final["run"] == 2 and final["sample_count"] == rows
    conn = await asyncpg.connect(database_url)
    try:
        n, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT sample_index) FROM imu_samples WHERE file_id = $1",
            uuid.UUID(running["id"]),
        )
    finally:
        await conn.close()
    assert n == distinct == rows
