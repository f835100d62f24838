"""The operator page in a real browser: what needs attention first, parsers, trends, failures, jobs."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import httpx
import pytest
from playwright.async_api import Page, expect

from imuflow import db
from imuflow.settings import Settings
from services.progress.operations import WATCHDOG_LOCK
from tests.browser.conftest import readme_picture
from tests.e2e.helpers import DATA, bearer, make_token, upload
from tests.ops.jobs import add_gapped_batches, make_job, make_user
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(240)]
XIO = DATA / "xio_fusion_sensor_data.csv"


async def history(conn: asyncpg.Connection, user: uuid.UUID) -> None:
    """A week of finished files with their batch logs, so the trend charts have a past."""
    for day in range(1, 7):
        for hour in (3, 9, 15):
            file_id = await make_job(conn, user, status="completed", filename=f"day{day}-{hour}.csv")
            end = f"now() - interval '{day} days' + interval '{hour} hours' - interval '1 day'"
            await conn.execute(
                f"""
                UPDATE imu_data_files SET created_at = {end} - interval '{40 + 10 * day} seconds',
                       processing_started_at = {end} - interval '{20 + 3 * hour} seconds',
                       completed_at = {end}, samples_processed = 200000, sample_count = 200000
                WHERE id = $1
                """,
                file_id,
            )
            await conn.execute(
                f"""
                INSERT INTO streaming_processing_logs
                    (file_id, user_id, run, batch_number, samples_in_batch, total_samples_processed,
                     batch_processing_time_ms, started_at, completed_at, attempt)
                SELECT $1, $2, 1, b, 20000, 20000 * b, 400 + 40 * $3::int,
                       {end} - make_interval(secs => 10 - b) - interval '0.4 seconds',
                       {end} - make_interval(secs => 10 - b), 1
                FROM generate_series(1, 10) b
                """,
                file_id,
                user,
                day,
            )
        if day in (2, 5):
            failed = await make_job(conn, user, status="failed", filename=f"bad-{day}.csv")
            await conn.execute(
                f"UPDATE imu_data_files SET error_message = 'no header row', "
                f"completed_at = now() - interval '{day} days' WHERE id = $1",
                failed,
            )


async def test_the_operator_page_shows_what_needs_attention_first(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page
) -> None:
    conn = await db.connect(database_url)
    # The running watchdog would requeue the stuck job before the page shows it: hold its lock.
    holder = await db.connect(database_url)
    hold = holder.transaction()
    await hold.start()
    await holder.execute("SELECT pg_advisory_xact_lock($1)", WATCHDOG_LOCK)
    try:
        grace, heidi = await make_user(conn, "grace"), await make_user(conn, "heidi")
        await history(conn, heidi)
        await make_job(conn, grace, checkpoint_ago=4000, claimed_ago=5000, filename="stuck.cwa")
        slowing = await make_job(conn, heidi, checkpoint_ago=0.5, claimed_ago=20, filename="slowing.csv")
        await add_gapped_batches(conn, slowing, heidi, [0.1] * 12 + [1.0] * 5)
        # A parser killed two minutes ago: its last heartbeat row stays, no longer live.
        await conn.execute(
            "INSERT INTO parser_heartbeats (parser_id, hostname, pid, started_at, seen_at,"
            " interval_seconds, concurrency, jobs_in_flight, samples_parsed, consumer_lag)"
            " VALUES ('gone-host:4242:dead00', 'gone-host', 4242, now() - interval '1 hour',"
            " now() - interval '2 minutes', 5, 2, 1, 777777, 999)"
        )
        broken = await make_job(conn, grace, status="failed", attempts=5, filename="broken.csv")
        await conn.execute(
            "UPDATE imu_data_files SET error_message = 'gave up after 5 attempts; last error: disk full',"
            " completed_at = now() - interval '3 hours' WHERE id = $1",
            broken,
        )

        stack = await service_stack(
            test_settings, env={"IMUFLOW_BATCH_SIZE": "2000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}
        )
        user_token = await make_token(database_url, "grace")
        admin_token = await make_token(database_url, "ops", admin=True)
        answer = await upload(stack.ingest_url, user_token, XIO)
        assert answer.status_code == 202, answer.text
        xio = answer.json()["id"]
        async with httpx.AsyncClient(timeout=10) as client:
            for _ in range(300):  # bounded: ~60 s
                record = (
                    await client.get(f"{stack.progress_url}/api/files/{xio}", headers=bearer(user_token))
                ).json()
                if record["status"] == "completed":
                    break
                await asyncio.sleep(0.2)
        assert record["status"] == "completed"
        # The parser's next heartbeat row (every 5 s) carries what it parsed: the page shows it.
        for _ in range(100):  # bounded: ~20 s
            query = "SELECT max(samples_parsed) FROM parser_heartbeats WHERE hostname <> 'gone-host'"
            if await conn.fetchval(query) == 13_514:
                break
            await asyncio.sleep(0.2)

        await page.set_viewport_size({"width": 1280, "height": 1180})
        await page.goto(f"{stack.progress_url}/admin")
        field = page.locator("#token")
        await expect(field).to_have_attribute("type", "password")
        await field.fill(admin_token)
        await field.press("Enter")
        await expect(page.locator("#jobs-view")).to_be_visible()
        await expect(page.locator("#live")).to_have_text("Live")

        # One look with the user page: its stylesheet and top bar.
        sheets = await page.evaluate("[...document.styleSheets].map(s => new URL(s.href).pathname)")
        assert "/static/app.css" in sheets
        await expect(page.locator("header.topbar .brand")).to_contain_text("imuflow")

        # Stuck, then slowing, in the first section.
        first = await page.evaluate("document.querySelector('#jobs-view section').id")
        assert first == "attention-card"
        attention = page.locator("#attention tbody tr")
        await expect(attention).to_have_count(2)
        await expect(attention.nth(0)).to_contain_text("stuck.cwa")
        await expect(attention.nth(0).locator(".badge")).to_have_text("stuck")
        await expect(attention.nth(0)).to_contain_text("grace")
        await expect(attention.nth(1)).to_contain_text("slowing.csv")
        await expect(attention.nth(1).locator(".badge")).to_have_text("slowing")
        await expect(attention.nth(1)).to_contain_text("median 10,000/s")
        await expect(page.locator("#all-well")).to_be_hidden()

        # Live parsers first (from their heartbeat rows), then the one that stopped beating.
        parsers = page.locator("#parsers tbody tr")
        await expect(parsers).to_have_count(2, timeout=20_000)
        await expect(parsers.first.locator(".badge")).to_have_text("live")
        await expect(parsers.first.locator("td").nth(3)).to_have_text("13,514")  # samples parsed
        await expect(parsers.nth(1).locator(".badge")).to_have_text("lost")
        await expect(parsers.nth(1)).to_contain_text("gone-host")
        # The lag of the parser group comes from live parsers only (not the dead one's 999).
        lag = page.locator("#lag")
        await expect(lag).to_contain_text("1 live · consumer lag")
        groups = rf"{test_settings.parser_group_id}: \d+ · {test_settings.progress_group_id}: \d+$"
        await expect(lag).to_have_text(re.compile(groups))
        await expect(lag).not_to_contain_text("999")

        charts = page.locator("#trends svg[role=img]")
        await expect(charts).to_have_count(3)
        await expect(charts.first).to_have_attribute(
            "aria-label", "Throughput in samples/s per hour, last 7 days"
        )
        await expect(charts.nth(1)).to_have_attribute(
            "aria-label", "Files completed and failed per hour, last 7 days"
        )
        await expect(charts.nth(2)).to_have_attribute(
            "aria-label", "Median queue wait and parse time per hour, last 7 days"
        )
        assert await page.locator("#trends path.line").count() >= 2
        assert await page.locator("#trends rect.bar-ok").count() >= 6
        assert await page.locator("#trends rect.bar-bad").count() == 3  # two "format" days, one "attempts"
        assert await charts.nth(2).locator("circle.dot.second").count() >= 6  # queue wait, every busy hour
        await expect(page.locator("#trend-totals")).to_contain_text("19 files completed")
        await expect(page.locator("#trend-totals")).to_have_text(
            re.compile(r"3 failed \((format 2, attempts 1|attempts 1, format 2)\)")
        )

        failures = page.locator("#failures tbody tr")
        await expect(failures).to_have_count(1)
        await expect(failures.first).to_contain_text("broken.csv")
        await expect(failures.first).to_contain_text("disk full")
        await expect(failures.first.locator(".badge")).to_have_text("attempts")

        jobs = page.locator("#jobs tr")
        done = jobs.filter(has_text=XIO.name)
        await expect(done.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
        await expect(done).to_contain_text("13,514 / 13,514")
        await expect(jobs.filter(has_text="stuck.cwa").locator("td").nth(8)).to_have_text("stuck")
        await expect(jobs.filter(has_text="slowing.csv").locator("td").nth(8)).to_have_text("slowing")

        # The README's picture: the first screen (attention, parsers, trends, failures).
        await readme_picture(page, "admin")

        await page.get_by_role("button", name="30 days").click()
        await expect(page.locator("#trend-totals")).to_contain_text("Last 30 days, per day")
        await expect(charts.first).to_have_attribute(
            "aria-label", "Throughput in samples/s per day, last 30 days"
        )
    finally:
        await hold.rollback()
        await holder.close()
        await conn.close()
