"""The operator dashboard's API, metric and CLI on running services.

Early warning, parsers, trends and failures.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from imuflow import db
from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token
from tests.ops.jobs import add_gapped_batches, make_job, make_user
from tests.ops.test_admin_api import sample
from tests.ops.test_cli_ops import imuflow
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def get(url: str, token: str | None = None, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, headers=bearer(token) if token else {}, params=params)


async def test_a_slowing_job_is_flagged_before_the_stuck_rule_fires(
    service_stack: StartStack, settings_factory: Any, tmp_path: Path
) -> None:
    # Long enough that the stuck rule (and the watchdog requeueing these jobs, whose files do
    # not exist) cannot fire while the test runs, however loaded the machine (it did at 30 s).
    settings: Settings = settings_factory(stuck_after=600.0)
    url = settings.database_url
    conn = await db.connect(url)
    try:
        dora = await make_user(conn, "dora")
        # A real parsing job's batch log: 12 batches at 10k samples/s, then it slows down to 1k/s.
        slow = await make_job(conn, dora, checkpoint_ago=0.5, claimed_ago=20, filename="slowing.cwa")
        await add_gapped_batches(conn, slow, dora, [0.1] * 12 + [1.0] * 5)
        steady = await make_job(conn, dora, checkpoint_ago=0.5, claimed_ago=20, filename="steady.csv")
        await add_gapped_batches(conn, steady, dora, [0.1] * 17)
        failed = await make_job(conn, dora, status="failed", filename="broken.csv")
        await conn.execute(
            "UPDATE imu_data_files SET error_message = 'gave up after 5 attempts; last error: disk',"
            " completed_at = now() - interval '2 hours', processing_started_at = now() - interval '3 hours'"
            " WHERE id = $1",
            failed,
        )
        old = await make_job(conn, dora, status="failed", filename="last-week.csv")
        await conn.execute(
            "UPDATE imu_data_files SET error_message = 'bad header', completed_at = now() - interval '3 days'"
            " WHERE id = $1",
            old,
        )
    finally:
        await conn.close()
    stack = await service_stack(settings, services=["progress", "parser"])
    admin = await make_token(url, "root", admin=True)
    base = f"{stack.progress_url}/api/admin"

    slowing = (await get(f"{base}/slowing", admin)).json()["items"]
    assert [(j["file_id"], j["owner"], j["filename"]) for j in slowing] == [
        (str(slow), "dora", "slowing.cwa")
    ]
    assert slowing[0]["median_rate"] == pytest.approx(10_000, rel=0.02) and slowing[0]["slow_batches"] == 5
    jobs = {j["id"]: j for j in (await get(f"{base}/jobs", admin)).json()["items"]}
    assert jobs[str(slow)]["is_slowing"] and not jobs[str(slow)]["is_stuck"]
    assert not jobs[str(steady)]["is_slowing"]

    async def gauge() -> bool:
        text = (await get(f"{stack.progress_url}/metrics")).text
        return sample(text, "imuflow_slowing_jobs") == 1

    await until(gauge, "the gauge counts the slowing job", within=30, every=0.3)
    # Every process exports the family from start (the parser has no jobs to judge: 0).
    assert sample((await get(f"{stack.parser_metrics_url}/metrics")).text, "imuflow_slowing_jobs") == 0

    # The parser's heartbeat row makes it a live parser; the lag of both groups is reported.
    async def live() -> list[dict[str, Any]]:
        body = (await get(f"{base}/parsers", admin)).json()
        return [p for p in body["items"] if p["live"]]

    parsers = await until(live, "a live parser", within=30, every=0.3)
    assert len(parsers) == 1 and parsers[0]["concurrency"] == settings.parser_concurrency
    lag = (await get(f"{base}/parsers", admin)).json()["consumer_lag"]
    assert set(lag) == {settings.parser_group_id, settings.progress_group_id}

    failures = (await get(f"{base}/failures", admin)).json()
    assert [(f["file_id"], f["owner"], f["reason"]) for f in failures["items"]] == [
        (str(failed), "dora", "attempts")
    ]
    assert (await get(f"{base}/failures", admin, hours=24 * 7)).json()["items"][1]["reason"] == "format"

    week = (await get(f"{base}/trends", admin, days=7)).json()
    assert week["bucket"] == "hour" and 168 <= len(week["points"]) <= 170
    assert sum(p["samples"] for p in week["points"]) == 34 * 1000
    assert sum(p["files_failed"] for p in week["points"]) == 2
    month = (await get(f"{base}/trends", admin, days=30, bucket="day")).json()
    assert 30 <= len(month["points"]) <= 32
    assert (await get(f"{base}/trends", admin, days=31)).status_code == 422
    for path in ("/slowing", "/parsers", "/trends", "/failures"):
        assert (await get(base + path)).status_code == 401, path

    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_ADMIN_TOKEN={admin}\n"
    )
    code, out = await imuflow(data_dir, "status")
    assert code == 0 and "slowing.cwa" in out and "1 job(s) slowing" in out and str(slow) in out, out
    code, out = await imuflow(data_dir, "trends")
    assert code == 0 and "last 7 days" in out and "34,000" in out and "attempts 1" in out, out
    code, out = await imuflow(data_dir, "trends", "--days", "30")
    assert code == 0 and "last 30 days" in out and "format 1" in out, out
    # The hourly series, as the page draws it: every hour of the week, and the same totals.
    code, out = await imuflow(data_dir, "trends", "--per", "hour")
    hours = [line for line in out.splitlines() if re.search(r"\d{4}-\d\d-\d\d \d\d:00", line)]
    assert code == 0 and "last 7 days, per hour" in out and 168 <= len(hours) <= 170, out
    assert "34,000" in out and "attempts 1" in out, out
