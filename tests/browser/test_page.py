"""The web page in a real browser: sign-in, uploads with live progress, reload, failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest
from playwright.async_api import Locator, Page, expect

from imuflow.settings import Settings
from tests.browser.conftest import screenshot, sign_in
from tests.e2e.helpers import DATA, bearer, make_token
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(240)]
XIO = DATA / "xio_fusion_sensor_data.csv"
SMALL_BATCHES = {"IMUFLOW_BATCH_SIZE": "2000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}


def row(page: Page, filename: str) -> Locator:
    """The file list row of `filename`."""
    return page.locator("li.file", has=page.locator(".file-name", has_text=filename))


async def no_horizontal_scroll(page: Page) -> bool:
    """True when nothing sticks out sideways."""
    return bool(
        await page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    )


async def value_now(bar: Locator) -> int:
    """The bar's aria-valuenow."""
    return int(await bar.get_attribute("aria-valuenow") or "0")


async def test_sign_in_rejects_a_bad_token_and_fits_a_small_screen(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page
) -> None:
    stack = await service_stack(test_settings, services=["progress"])
    token = await make_token(database_url, "alice")
    await page.set_viewport_size({"width": 360, "height": 740})

    await page.goto(stack.progress_url)
    field = page.locator("#token")
    await expect(field).to_have_attribute("type", "password")
    await field.fill("not-a-token")
    await field.press("Enter")
    error = page.locator("#sign-in-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text("invalid, revoked or expired token")
    await expect(page.locator("#workspace")).to_be_hidden()
    assert await no_horizontal_scroll(page)
    await screenshot(page, "sign-in-bad-token-360px")

    await sign_in(page, stack.progress_url, token)
    await expect(page.locator("#no-files")).to_be_visible()
    assert await no_horizontal_scroll(page)
    await screenshot(page, "empty-workspace-360px")
    cookies = await page.context.cookies()
    session = [c for c in cookies if c["name"] == "imuflow_session"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict"
    assert token not in page.url and token not in await page.evaluate("JSON.stringify(localStorage)")

    await page.reload()  # the cookie keeps the session
    await expect(page.locator("#workspace")).to_be_visible()
    await page.locator("#sign-out").click()
    await expect(page.locator("#token")).to_be_visible()
    await page.reload()
    await expect(page.locator("#token")).to_be_visible()
    await expect(page.locator("#workspace")).to_be_hidden()


async def test_uploads_show_live_progress_to_completion_and_failures_with_reasons(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env=SMALL_BATCHES)
    token = await make_token(database_url, "alice")
    damaged = tmp_path / "holiday-photo.csv"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64)
    await sign_in(page, stack.progress_url, token)

    await page.set_input_files("#file-input", [str(XIO), str(damaged)])
    good = row(page, XIO.name)
    bar = good.get_by_role("progressbar")
    await expect(bar).to_have_attribute("aria-label", f"Progress of {XIO.name}")
    await expect(bar).to_have_attribute("aria-valuenow", "100", timeout=120_000)
    await expect(good.locator(".badge")).to_have_text("Completed")
    await expect(good.locator(".samples")).to_have_text("13,514 / 13,514 samples")
    await expect(good.locator(".file-times")).to_contain_text("Finished")

    bad = row(page, damaged.name)
    await expect(bad.locator(".badge")).to_have_text("Failed", timeout=120_000)
    reason = (await bad.locator(".file-error").inner_text()).strip()
    assert len(reason) > 10, reason
    await expect(bad.get_by_role("button", name=f"Retry: {damaged.name}")).to_be_visible()
    await screenshot(page, "completed-and-failed")

    # The detail view: a bar per batch (7 of 2,000 samples) and the summary of the samples.
    await good.locator(".file-name").focus()
    await page.keyboard.press("Enter")
    dialog = page.locator("#detail")
    await expect(dialog).to_be_visible()
    await expect(dialog.locator("svg.chart rect.bar-rect")).to_have_count(7)
    await expect(dialog.locator(".summary")).to_contain_text("13,514")
    await expect(dialog.locator("table.ranges tbody tr")).to_have_count(9)
    await screenshot(page, "detail-completed")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()

    async with httpx.AsyncClient(timeout=10) as client:
        file_id = await good.get_attribute("data-id")
        answer = await client.get(f"{stack.progress_url}/api/files/{file_id}/summary", headers=bearer(token))
        summary = answer.json()
        config = (await client.get(f"{stack.progress_url}/api/config")).json()
    assert summary["samples"] == 13_514
    assert set(summary["sensors"][0]["ranges"]) == {"ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz"}
    assert summary["duration_seconds"] > 0 and summary["sample_rate_hz"] > 0
    assert config == {"ingest_url": stack.ingest_url}

    # Delete asks for a second click; then the row goes, or the API's refusal shows on it.
    delete = bad.get_by_role("button", name=f"Delete: {damaged.name}")
    await delete.click()
    await expect(delete).to_have_text("Confirm delete")
    await delete.click()
    await page.wait_for_function(
        "() => !document.querySelector('li.file[data-status=failed]') || "
        "document.querySelector('li.file[data-status=failed] .action-message').textContent.length > 0",
        timeout=10_000,
    )


def big_csv(path: Path, rows: int) -> Path:
    """A generic CSV of `rows` samples in the x-io layout (enough batches to reload mid-way)."""
    rng = np.random.default_rng(7)
    data = np.column_stack([np.arange(rows) * 0.01, rng.normal(0, 1, (rows, 9))])
    header = (
        "Time (s),Gyroscope X (deg/s),Gyroscope Y (deg/s),Gyroscope Z (deg/s),Accelerometer X (g),"
        "Accelerometer Y (g),Accelerometer Z (g),Magnetometer X (uT),Magnetometer Y (uT),Magnetometer Z (uT)"
    )
    np.savetxt(path, data, fmt="%.5f", delimiter=",", header=header, comments="")
    return path


WATCH_BAR = """el => {
    window.seen = [Number(el.getAttribute('aria-valuenow'))];
    new MutationObserver(() => window.seen.push(Number(el.getAttribute('aria-valuenow'))))
        .observe(el, {attributes: true, attributeFilter: ['aria-valuenow']});
}"""


async def test_reload_and_a_dropped_stream_resume_live_progress(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page, tmp_path: Path
) -> None:
    big = await asyncio.to_thread(big_csv, tmp_path / "long-walk.csv", 300_000)
    # Batches of 1,000 make 300 batches: time to reload and to restart a service mid-way.
    stack = await service_stack(test_settings, env={**SMALL_BATCHES, "IMUFLOW_BATCH_SIZE": "1000"})
    token = await make_token(database_url, "alice")
    await sign_in(page, stack.progress_url, token)

    await page.set_input_files("#file-input", str(big))
    bar = row(page, big.name).get_by_role("progressbar")
    await page.wait_for_function(
        "el => Number(el.getAttribute('aria-valuenow')) >= 3", arg=await bar.element_handle(), timeout=120_000
    )
    await screenshot(page, "parsing-before-reload")
    before = await value_now(bar)
    assert before < 100, "the file finished before the page could be reloaded"

    await page.reload()
    bar = row(page, big.name).get_by_role("progressbar")
    await expect(bar).to_be_visible(timeout=5_000)
    after_reload = await value_now(bar)
    assert after_reload >= before
    await page.evaluate(WATCH_BAR, await bar.element_handle())
    await screenshot(page, "parsing-after-reload")
    await page.wait_for_function(
        f"el => Number(el.getAttribute('aria-valuenow')) > {after_reload}",
        arg=await bar.element_handle(),
        timeout=120_000,
    )

    # The detail chart grows while the file parses.
    await row(page, big.name).locator(".file-name").click()
    rects = page.locator("#detail svg.chart rect.bar-rect")
    await expect(rects.first).to_be_visible()
    drawn = await rects.count()
    await page.wait_for_function(
        f"() => document.querySelectorAll('#detail svg.chart rect.bar-rect').length > {drawn}", timeout=60_000
    )
    await screenshot(page, "detail-parsing")
    await page.keyboard.press("Escape")

    # The progress service dies and comes back: EventSource reconnects with Last-Event-ID,
    # the missed events are replayed, and the row carries on without going backwards.
    progress = stack.supervisor.services["progress"].process
    assert progress is not None
    progress.kill()
    await expect(page.locator("#live-state")).not_to_have_text("Live", timeout=10_000)
    await expect(page.locator("#live-state")).to_have_text("Live", timeout=90_000)

    await page.set_viewport_size({"width": 360, "height": 740})
    assert await no_horizontal_scroll(page)
    await screenshot(page, "parsing-360px")

    await expect(bar).to_have_attribute("aria-valuenow", "100", timeout=180_000)
    done = row(page, big.name)
    await expect(done.locator(".badge")).to_have_text("Completed")
    await expect(done.locator(".samples")).to_have_text("300,000 / 300,000 samples")
    await expect(page.locator("li.file")).to_have_count(1)
    seen = await page.evaluate("window.seen")
    assert seen == sorted(seen), f"the bar went backwards: {seen}"


# Every row in page order: (file id, parent id or null).
FAMILY = "() => [...document.querySelectorAll('li.file')].map(e => [e.dataset.id, e.dataset.parent || null])"


async def test_a_zip_upload_shows_its_sensor_streams_under_it(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page, tmp_path: Path
) -> None:
    from tests.ingest.test_archive import PHYPHOX, phyphox_zip

    stack = await service_stack(test_settings, env=SMALL_BATCHES)
    token = await make_token(database_url, "alice")
    archive = phyphox_zip(tmp_path / "walk.zip")
    await sign_in(page, stack.progress_url, token)

    # A plain file before and after the ZIP: the ZIP's streams must not mix with them.
    await page.set_input_files("#file-input", [str(XIO)])
    await expect(row(page, XIO.name).locator(".badge")).to_have_text("Completed", timeout=120_000)
    await page.set_input_files("#file-input", [str(archive)])
    parent = row(page, archive.name)
    await expect(parent.locator(".file-meta")).to_contain_text("3 sensor streams", timeout=60_000)
    await page.set_input_files("#file-input", [str(PHYPHOX["Gyroscope.csv"][0])])

    for name, (_, samples) in PHYPHOX.items():
        child = page.locator("li.file.child", has=page.locator(".file-name", has_text=name))
        await expect(child.locator(".badge")).to_have_text("Completed", timeout=120_000)
        await expect(child.locator(".samples")).to_have_text(f"{samples:,} / {samples:,} samples")
        await expect(child.locator(".file-meta")).to_contain_text(f"sensor stream of {archive.name}")
    await expect(parent.locator(".badge")).to_have_text("Completed", timeout=120_000)
    await expect(page.locator("li.file")).to_have_count(6, timeout=60_000)
    await screenshot(page, "zip-with-sensor-streams")

    async def assert_nested() -> None:
        order = await page.evaluate(FAMILY)
        parent_id = await parent.get_attribute("data-id")
        at = next(i for i, (file_id, _) in enumerate(order) if file_id == parent_id)
        assert [p for _, p in order[at + 1 : at + 4]] == [parent_id] * 3, order
        assert sum(p is not None for _, p in order) == 3, order  # nothing else is nested
        assert at > 0 and order[0][1] is None  # the newest upload (the gyroscope CSV) is above

    await assert_nested()
    await page.reload()  # rebuilt from GET /api/files and the stream: the same nesting
    await expect(page.locator("li.file")).to_have_count(6, timeout=30_000)
    await assert_nested()
