"""The stuck rule and the operations views (migrations 0002, 0007, 0008, 0020), on a real Postgres."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID

import asyncpg
import numpy as np
import pytest

from contracts import topics
from contracts.events import FILE_EVENT
from imuflow import db, dberrors, outbox
from tests.ops.jobs import add_batches, make_job, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await db.connect(database_url)
    try:
        yield c
    finally:
        await c.close()


async def stuck_ids(conn: asyncpg.Connection, threshold: timedelta | None = None) -> set[UUID]:
    rows = await conn.fetch("SELECT file_id FROM get_stuck_streaming_processes($1::interval)", threshold)
    return {r["file_id"] for r in rows}


async def test_parsing_job_is_stuck_when_its_checkpoint_is_older_than_stuck_after(
    conn: asyncpg.Connection,
) -> None:
    user = await make_user(conn)
    old = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500)
    fresh = await make_job(conn, user, checkpoint_ago=100, claimed_ago=500)
    never = await make_job(conn, user, checkpoint_ago=None, claimed_ago=400)
    reclaimed = await make_job(conn, user, checkpoint_ago=1000, claimed_ago=10)
    assert await stuck_ids(conn) == {old, never}
    # An explicit threshold replaces STUCK_AFTER in the same rule.
    assert await stuck_ids(conn, timedelta(seconds=50)) == {old, fresh, never}
    assert reclaimed not in await stuck_ids(conn, timedelta(seconds=50))


async def test_configured_stuck_after_is_read_from_imuflow_config(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=100, claimed_ago=200)
    assert await stuck_ids(conn) == set()
    await conn.execute("UPDATE imuflow_config SET stuck_after = interval '60 seconds'")
    assert await stuck_ids(conn) == {job}


async def test_slow_batches_raise_the_limit_to_ten_median_intervals(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=2000)
    # Batches 60 s apart: the limit is 600 s, so 400 s of silence is normal for this file.
    await add_batches(conn, job, user, [500.0] * 5, spacing_seconds=60)
    row = await conn.fetchrow("SELECT * FROM streaming_job_health(NULL) WHERE file_id = $1", job)
    assert row["median_batch_seconds"] == pytest.approx(60, abs=0.5)
    assert row["limit_seconds"] == pytest.approx(600, abs=5)
    assert not row["is_stuck"]
    await conn.execute(
        "UPDATE imu_data_files SET resume_checkpoint_at = now() - interval '700 seconds' WHERE id = $1", job
    )
    assert await stuck_ids(conn) == {job}


async def test_queued_job_never_claimed_is_stuck(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    lost = await make_job(conn, user, status="queued", claimed_ago=None, queued_ago=400, attempts=0)
    await make_job(conn, user, status="queued", claimed_ago=None, queued_ago=20, attempts=0)
    await make_job(conn, user, status="completed", claimed_ago=5000, checkpoint_ago=5000)
    assert await stuck_ids(conn) == {lost}


async def test_a_queued_job_of_an_upload_still_receiving_is_ingests_not_stuck(
    conn: asyncpg.Connection,
) -> None:
    user = await make_user(conn)
    parked = await make_job(conn, user, status="queued", claimed_ago=500, queued_ago=4000, attempts=1)
    await conn.execute(
        "UPDATE imu_data_files SET upload_receiving = true, upload_parked = 'paused' WHERE id = $1", parked
    )
    lost = await make_job(conn, user, status="queued", claimed_ago=None, queued_ago=400, attempts=0)
    assert await stuck_ids(conn) == {lost}  # a paused tus upload waits for its next bytes (0020)


async def test_reset_requeues_through_the_outbox_and_records_an_event(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500, attempts=2)
    before = await conn.fetchval("SELECT COALESCE(max(id), 0) FROM file_events")
    rows = await conn.fetch("SELECT * FROM reset_stuck_streaming_processes()")
    assert [(r["file_id"], r["action"], r["attempts"]) for r in rows] == [(job, "requeued", 2)]
    assert "no checkpoint for 40" in rows[0]["reason"]
    state = await conn.fetchrow(
        "SELECT status, queued_at > now() - interval '5 s' AS fresh FROM imu_data_files"
    )
    assert state["status"] == "queued" and state["fresh"]
    # SQL writes a stub; the relay builds the contract event from the file's row.
    stub = await conn.fetchrow("SELECT topic, key, payload FROM outbox")
    assert stub["topic"] == topics.FILES and stub["key"] == str(job)
    assert stub["payload"] == {"build": "file.queued", "reason": "requeue"}
    async with conn.transaction():
        [built] = await outbox.build_stubs(conn, await conn.fetch(outbox.QUERIES["claim_pending"], 10))
    assert await conn.fetchval("SELECT payload FROM outbox") == built["payload"]
    event = FILE_EVENT.validate_python(built["payload"])
    assert (event.file_id, event.user_id, event.reason, event.run) == (job, user, "requeue", 1)
    assert event.storage_uri == f"file:///nowhere/{job}"
    events = await conn.fetch("SELECT event_type, data FROM file_events WHERE id > $1", before)
    assert [e["event_type"] for e in events] == ["progress"]
    assert events[0]["data"]["status"] == "queued"
    # Requeued means not stuck any more: a second reset does nothing.
    assert await conn.fetch("SELECT * FROM reset_stuck_streaming_processes()") == []


async def test_reset_fails_a_job_whose_attempts_are_spent(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500, attempts=7, attempts_base=2)
    rows = await conn.fetch("SELECT * FROM reset_stuck_streaming_processes(NULL)")
    assert [(r["file_id"], r["action"]) for r in rows] == [(job, "failed")]
    assert "after 5 of 5 attempts" in rows[0]["reason"]
    state = await conn.fetchrow("SELECT status, error_message, resume_samples FROM imu_data_files")
    assert state["status"] == "failed" and "stuck" in state["error_message"]
    assert state["resume_samples"] == 5000  # the checkpoint is kept: a retry resumes
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    event = await conn.fetchrow("SELECT event_type, data FROM file_events ORDER BY id DESC LIMIT 1")
    assert event["event_type"] == "failed" and event["data"]["error_message"] == state["error_message"]


async def test_reset_skips_a_row_a_parser_is_writing(conn: asyncpg.Connection, database_url: str) -> None:
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500)
    parser = await db.connect(database_url)
    try:
        tx = parser.transaction()
        await tx.start()
        await parser.execute("UPDATE imu_data_files SET resume_checkpoint_at = now() WHERE id = $1", job)
        assert await conn.fetch("SELECT * FROM reset_stuck_streaming_processes()") == []
        await tx.commit()
    finally:
        await parser.close()
    assert await stuck_ids(conn) == set()


async def test_status_view_has_one_row_per_file_with_owner_and_stuck_flag(conn: asyncpg.Connection) -> None:
    user = await make_user(conn, "bob")
    stuck = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500)
    healthy = await make_job(conn, user, checkpoint_ago=1, claimed_ago=500)
    done = await make_job(conn, user, status="completed", claimed_ago=500)
    rows = {r["file_id"]: r for r in await conn.fetch("SELECT * FROM streaming_processing_status")}
    assert set(rows) == {stuck, healthy, done}
    assert rows[stuck]["is_stuck"] and rows[stuck]["owner"] == "bob"
    assert rows[stuck]["seconds_since_checkpoint"] == pytest.approx(400, abs=5)
    assert not rows[healthy]["is_stuck"] and not rows[done]["is_stuck"]
    assert rows[done]["percent"] == 100.0


async def test_performance_view_gives_throughput_and_percentiles(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    a = await make_job(conn, user, status="completed")
    b = await make_job(conn, user, status="failed")
    times_a = [float(x) for x in range(10, 110, 10)]
    await add_batches(conn, a, user, times_a)
    await add_batches(conn, b, user, [1000.0, 3000.0])
    rows = await conn.fetch("SELECT * FROM streaming_performance_metrics")
    overall = next(r for r in rows if r["scope"] == "overall")
    per_file = {r["file_id"]: r for r in rows if r["scope"] == "file"}
    assert per_file[a]["batches"] == 10 and per_file[a]["samples"] == 10_000
    assert per_file[a]["batch_ms_p50"] == pytest.approx(np.percentile(times_a, 50))
    assert per_file[a]["batch_ms_p95"] == pytest.approx(np.percentile(times_a, 95))
    assert per_file[a]["batch_ms_p99"] == pytest.approx(np.percentile(times_a, 99))
    assert per_file[a]["samples_per_batch_second"] == pytest.approx(10_000 / (sum(times_a) / 1000))
    assert per_file[a]["failure_rate"] == 0 and per_file[b]["failure_rate"] == 1
    all_times = [*times_a, 1000.0, 3000.0]
    assert overall["batches"] == 12 and overall["samples"] == 12_000
    assert overall["batch_ms_p99"] == pytest.approx(np.percentile(all_times, 99))
    assert (overall["files"], overall["files_completed"], overall["files_failed"]) == (2, 1, 1)
    assert overall["failure_rate"] == pytest.approx(0.5)
    assert json.loads(json.dumps(overall["batch_seconds"])) == pytest.approx(sum(all_times) / 1000)


async def test_a_queued_job_behind_busy_parsers_is_waiting_not_stuck(conn: asyncpg.Connection) -> None:
    user = await make_user(conn)
    waiting = await make_job(conn, user, status="queued", claimed_ago=None, queued_ago=400, attempts=0)
    await make_job(conn, user, checkpoint_ago=5, claimed_ago=100)  # a parser at work
    assert await stuck_ids(conn) == set()
    # Past QUEUE_PATIENCE (6 x STUCK_AFTER) its event counts as lost even so.
    await conn.execute(
        "UPDATE imu_data_files SET queued_at = now() - interval '1900 seconds' WHERE id = $1", waiting
    )
    assert await stuck_ids(conn) == {waiting}


async def test_reset_ends_a_backend_holding_a_stuck_rows_lock_past_the_hold_timeout(
    conn: asyncpg.Connection, database_url: str
) -> None:
    # Hold timeout = 2 x STUCK_AFTER, at least 10 s (what the parser bounds its own batch
    # transactions by): a lock held longer is nobody's work in progress.
    await conn.execute("UPDATE imuflow_config SET stuck_after = interval '1 second'")
    user = await make_user(conn)
    job = await make_job(conn, user, checkpoint_ago=400, claimed_ago=500)
    holder = await db.connect(database_url)  # an operator's forgotten SELECT ... FOR UPDATE
    try:
        pid = await holder.fetchval("SELECT pg_backend_pid()")
        await holder.execute("BEGIN")
        await holder.execute("SELECT 1 FROM imu_data_files WHERE id = $1 FOR UPDATE", job)
        started = time.monotonic()
        # Held for less than the hold timeout: it may be a parser writing; skipped.
        assert await conn.fetch("SELECT * FROM reset_stuck_streaming_processes()") == []
        assert await stuck_ids(conn) == {job}
        await asyncio.sleep(max(0.0, 10.5 - (time.monotonic() - started)))
        rows = await conn.fetch("SELECT * FROM reset_stuck_streaming_processes()")
        assert [(r["file_id"], r["action"]) for r in rows] == [(job, "requeued")]
        assert f"ended backend {pid}" in rows[0]["reason"]
        assert await conn.fetchval("SELECT status FROM imu_data_files WHERE id = $1", job) == "queued"
        assert await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0
        with pytest.raises(dberrors.DRIVER):
            await holder.fetchval("SELECT 1")
    finally:
        if not holder.is_closed():
            holder.terminate()
