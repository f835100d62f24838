"""Early warning with a reader that slows down on purpose (the issue's test).

The parser's own job code (`FileJob`: claim, batches, COPY, checkpoints, progress events)
parses a real CSV with a reader registered for this test: the generic CSV reader, except
that from its 16th batch on each batch waits a second (as a reader on a failing disk or a
stalled network mount would). The batch log then shows the rate falling below a third of
the job's own median, and the running progress service flags the job `slowing` on the
operator API, in `imuflow status` and in the gauge `imuflow_slowing_jobs`, while it still
checkpoints every second, so the stuck rule has not fired. Once the reader recovers the job
completes with its exact count, never requeued, and the gauge goes back to 0.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
import pytest

from contracts import events
from imuflow import kafka
from imuflow.settings import Settings
from services.parser.formats import registry
from services.parser.formats.base import FileInfo, ReadOptions, ResumePoint, SampleBatch
from services.parser.formats.presets import TEXT_PRESETS
from services.parser.formats.text_engine import TextReader
from services.parser.job import FileJob, Outcome
from services.parser.repository import ParserRepository
from tests.e2e.helpers import make_token
from tests.faults.helpers import fetchval, synth_csv, wait_terminal
from tests.ops.jobs import make_job, make_user
from tests.ops.test_admin_api import sample
from tests.ops.test_cli_ops import imuflow
from tests.ops.test_dashboard_api import get
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
BATCH = 1000
ROWS = 60 * BATCH
FAST_BATCHES = 15
DELAY = 1.0  # seconds each batch waits once the reader slows down


class SlowingReader:
    """The generic CSV reader, slowed on purpose after `FAST_BATCHES` until `recovered` is set."""

    format_id = "slowing_csv"

    def __init__(self, recovered: threading.Event) -> None:
        self._inner = TextReader(TEXT_PRESETS["generic_csv"])
        self._recovered = recovered

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        return self._inner.open(f, options, resume)

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        for number, batch in enumerate(self._inner.batches(target_samples), start=1):
            if number > FAST_BATCHES:
                self._recovered.wait(DELAY)  # in the job's reader thread, as real reads block
            yield batch


async def test_a_reader_that_slows_down_is_flagged_before_the_job_is_stuck(
    tmp_path: Path,
    settings_factory: Any,
    service_stack: StartStack,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recovered = threading.Event()
    monkeypatch.setitem(
        registry.BINARY_READERS,
        SlowingReader.format_id,
        registry.BinaryFormat(lambda: SlowingReader(recovered), lambda head, name: False),
    )
    # STUCK_AFTER 30 s: the watchdog (which sets the gauge) runs every 3 s; the job
    # checkpoints every second even when slow, so the stuck rule cannot fire.
    settings: Settings = settings_factory(
        batch_size=BATCH, adaptive_batching=False, fair_share_slice=0, stuck_after=30.0
    )
    await kafka.ensure_topics(settings)
    stack = await service_stack(settings, services=["progress"])
    admin = await make_token(settings.database_url, "root", admin=True)
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_ADMIN_TOKEN={admin}\n"
    )

    csv = synth_csv(tmp_path / "slowing.csv", ROWS)
    async with pool.acquire() as conn:
        dora = await make_user(conn, "dora")
        file_id = await make_job(conn, dora, status="queued", claimed_ago=None, attempts=0, filename=csv.name)
        await conn.execute(
            "UPDATE imu_data_files SET storage_uri = $2, size_bytes = $3, format = $4,"
            " resume_samples = 0, resume_batch_number = 0 WHERE id = $1",
            file_id, csv.resolve().as_uri(), csv.stat().st_size, SlowingReader.format_id,
        )  # fmt: skip
        row = await conn.fetchrow("SELECT * FROM imu_data_files WHERE id = $1", file_id)
    event = events.FileQueued.of_file(dict(row), "upload")

    async def gauge() -> float:
        return sample((await get(f"{stack.progress_url}/metrics")).text, "imuflow_slowing_jobs")

    async def flagged() -> list[dict[str, Any]]:
        items = (await get(f"{stack.progress_url}/api/admin/slowing", admin)).json()["items"]
        return [j for j in items if j["file_id"] == str(file_id)]

    async def gauge_at_least_one() -> bool:
        return await gauge() >= 1

    async def gauge_back_to_zero() -> bool:
        return await gauge() == 0

    assert await gauge() == 0
    producer = kafka.producer(settings)
    await producer.start()
    try:
        job = asyncio.create_task(
            FileJob(settings, ParserRepository(pool), producer, event, asyncio.Event()).run()
        )
        try:
            (slowing,) = await until(flagged, "the job flagged slowing", within=60, every=0.3)
            jobs = (await get(f"{stack.progress_url}/api/admin/jobs", admin)).json()["items"]
            flags = next(j for j in jobs if j["id"] == str(file_id))
            await until(gauge_at_least_one, "imuflow_slowing_jobs >= 1", within=30, every=0.3)
            code, status = await imuflow(data_dir, "status")
        finally:
            recovered.set()
        assert await asyncio.wait_for(job, 60) is Outcome.DONE
    finally:
        await producer.stop()

    # Flagged once five slow batches are logged: from the 20th, or the 19th when a hiccup
    # (a 50 ms batch against a median of ~15 ms) made the 15th slow enough too.
    assert slowing["slow_batches"] == 5 and slowing["batch_number"] >= FAST_BATCHES + 4
    assert slowing["recent_rate"] < slowing["median_rate"] / 3
    assert flags["status"] == "parsing" and flags["is_slowing"] and not flags["is_stuck"]
    assert code == 0 and csv.name in status and str(file_id) in status, status
    assert "1 job(s) slowing" in status, status
    final = await wait_terminal(settings.database_url, str(file_id), timeout=30)
    assert (final.status, final.samples, final.distinct) == ("completed", ROWS, ROWS), final
    # Warned before the stuck rule: the one delivery finished the job, nothing requeued it.
    attempts = "SELECT attempts FROM imu_data_files WHERE id = $1::uuid"
    assert await fetchval(settings.database_url, attempts, str(file_id)) == 1
    await until(gauge_back_to_zero, "imuflow_slowing_jobs back to 0", within=30, every=0.3)
