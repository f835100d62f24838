"""Upload → Kafka → parse → Postgres → SSE, with every service a separate process."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token, upload
from tests.faults.helpers import wait_for
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
XIO = DATA / "xio_fusion_sensor_data.csv"
XIO_SAMPLES = 13_514


async def test_upload_is_parsed_with_live_progress(
    test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(
        test_settings, env={"IMUFLOW_BATCH_SIZE": "2000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}
    )
    token = await make_token(database_url, "alice")
    other = await make_token(database_url, "mallory")

    response = await upload(stack.ingest_url, token, XIO)
    assert response.status_code == 202, response.text
    record = response.json()
    assert record["status"] in ("uploaded", "queued")
    assert record["size_bytes"] == XIO.stat().st_size
    file_id = record["id"]

    stream = f"{stack.progress_url}/api/files/{file_id}/events"
    seen = await asyncio.wait_for(follow_until_done(stream, token), 120)

    final = seen[-1]
    assert final.type == "completed", [e.record.get("error_message") for e in seen[-2:]]
    assert final.record["samples_processed"] == XIO_SAMPLES
    assert final.record["sample_count"] == XIO_SAMPLES
    assert final.record["sample_count_exact"] is True
    assert final.record["percent"] == 100
    percents = [e.record["percent"] for e in seen]
    assert percents == sorted(percents), "percent went backwards"
    ids = [int(e.id) for e in seen]
    assert ids == sorted(ids)
    batches = [
        e.record["batch_number"] for e in seen if e.record["status"] == "parsing" and e.record["batch_number"]
    ]
    expected_batches = -(-XIO_SAMPLES // 2000)  # 7
    assert set(batches) <= set(range(1, expected_batches + 1))
    assert len(batches) == len(set(batches)), "a batch was announced twice"

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM imu_samples WHERE file_id = $1", record["id"] and file_id
        )
        distinct = await conn.fetchval(
            "SELECT count(DISTINCT sample_index) FROM imu_samples WHERE file_id = $1::uuid", file_id
        )
        # The batch log is written by the progress service from the progress events, which
        # travel through Kafka; `completed` can reach the browser a moment before the last
        # of them is applied (seen once on a loaded machine), so wait for it, bounded.
        await wait_for(
            database_url,
            "SELECT count(*) >= $2 FROM streaming_processing_logs WHERE file_id = $1::uuid",
            file_id,
            expected_batches,
            timeout=10,
            what="a complete batch log",
        )
        logs = await conn.fetch(
            "SELECT batch_number, samples_in_batch FROM streaming_processing_logs "
            "WHERE file_id = $1::uuid ORDER BY batch_number",
            file_id,
        )
    finally:
        await conn.close()
    assert stored == XIO_SAMPLES
    assert distinct == XIO_SAMPLES
    assert [r["batch_number"] for r in logs] == list(range(1, expected_batches + 1))
    assert sum(r["samples_in_batch"] for r in logs) == XIO_SAMPLES

    async with httpx.AsyncClient(timeout=10) as client:
        listed = (await client.get(f"{stack.progress_url}/api/files", headers=bearer(token))).json()
        assert [f["id"] for f in listed["items"]] == [file_id]
        batches_api = (
            await client.get(f"{stack.progress_url}/api/files/{file_id}/batches", headers=bearer(token))
        ).json()
        assert len(batches_api["items"]) == expected_batches
        progress = (
            await client.get(f"{stack.progress_url}/api/files/{file_id}/progress", headers=bearer(token))
        ).json()
        assert progress["samples_processed"] == XIO_SAMPLES
        # Isolation: another user sees nothing, not even that the file exists.
        for path in (
            f"/api/files/{file_id}",
            f"/api/files/{file_id}/progress",
            f"/api/files/{file_id}/events",
        ):
            denied = await client.get(f"{stack.progress_url}{path}", headers=bearer(other))
            assert denied.status_code == 404, path
        assert (await client.get(f"{stack.progress_url}/api/files", headers=bearer(other))).json() == {
            "items": [],
            "next": None,
        }
        assert (await client.get(f"{stack.progress_url}/api/files/{file_id}")).status_code == 401

    # A client that subscribes after the job finished still gets `completed` first.
    late = await asyncio.wait_for(follow_until_done(stream, token), 30)
    assert [e.type for e in late] == ["completed"]
