"""The detail view's signal preview in a real browser: panels per sensor, zoom, summary.

Also the README's picture of the detail view (docs/img/detail.png), and the file list's
bars, whose fill must match their number the moment the number shows.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import Page, expect

from imuflow.settings import Settings
from tests.browser.conftest import readme_picture, screenshot, sign_in
from tests.e2e.helpers import DATA, make_token
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(240)]
XIO = DATA / "xio_fusion_sensor_data.csv"  # accelerometer, gyroscope and magnetometer
SMALL_BATCHES = {"IMUFLOW_BATCH_SIZE": "2000", "IMUFLOW_ADAPTIVE_BATCHING": "false"}

XSENS_AU = DATA / "opensim_MT_01200454_000-000_00B40DE4.txt"  # magnetometer in a.u., no time
APDM = DATA / "opensim_imuData01.csv"  # four IMUs in one file

# A row's bar read in one go: the fill's width over the bar's, its number, the number shown
# as text, and whether it is indeterminate (waiting: no number shown, a sliding fill).
FILL_AND_NUMBER = """(row) => {
  const bar = row.querySelector('[role=progressbar]');
  const fill = bar.firstElementChild.getBoundingClientRect().width;
  return [fill / bar.getBoundingClientRect().width, Number(bar.getAttribute('aria-valuenow')),
          row.querySelector('.pct').textContent, bar.classList.contains('indeterminate')];
}"""


async def test_detail_view_draws_the_signal_zooms_and_shows_the_summary(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page
) -> None:
    stack = await service_stack(test_settings, env=SMALL_BATCHES)
    token = await make_token(database_url, "researcher")
    await sign_in(page, stack.progress_url, token)
    await page.set_input_files("#file-input", [str(XIO)])
    row = page.locator("li.file", has=page.locator(".file-name", has_text=XIO.name))
    # Sample the bar while it moves: whenever a number shows, the fill is exactly there.
    seen = set()
    for _ in range(400):
        fraction, value, shown, waiting = await row.evaluate(FILL_AND_NUMBER)
        if not waiting:
            assert shown == f"{value}%" and abs(fraction - value / 100) <= 0.002, (fraction, value, shown)
            seen.add(value)
        if value == 100:
            break
        await page.wait_for_timeout(25)
    assert 100 in seen, seen
    await expect(row.locator(".badge")).to_have_text("Completed", timeout=60_000)

    await row.locator(".file-name").click()
    dialog = page.locator("#detail")
    figure = dialog.get_by_role("img", name=re.compile(r"^Signal"))
    await expect(figure).to_be_visible()
    await expect(figure).to_have_attribute("aria-label", re.compile("accelerometer ax, ay, az in m/s²"))
    panels = figure.locator("svg.signal-panel")
    await expect(panels).to_have_count(3)  # accelerometer, gyroscope, magnetometer
    assert [await p.get_attribute("data-sensor") for p in await panels.all()] == ["a", "g", "m"]
    traces = figure.locator("path.trace")
    await expect(traces).to_have_count(9)
    points = int(await figure.get_attribute("data-points") or "0")
    assert points == 800  # the page asks for 800 buckets; 13,514 samples fill them
    # Every trace drew a band through all buckets (the file has no gap of a bucket's width).
    for d in [await t.get_attribute("d") or "" for t in await traces.all()]:
        assert d.count("L") >= 2 * points - 1, d[:80]
    await expect(dialog.locator(".signal-side")).to_contain_text("13,514")
    await expect(dialog.locator(".signal-side")).to_contain_text("Hz")
    await expect(dialog.locator(".signal-side")).to_contain_text("Longest interval")
    await expect(dialog.locator("table.ranges tbody tr")).to_have_count(9)
    label = await figure.get_attribute("aria-label")
    await readme_picture(page, "detail")

    # Drag across the first panel: the preview zooms to that span.
    box = await panels.first.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] * 0.3, y)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    await page.mouse.up()
    reset = dialog.get_by_role("button", name="Whole recording")
    await expect(reset).to_be_visible()
    zoomed = dialog.get_by_role("img", name=re.compile(r"^Signal"))
    await expect(zoomed).not_to_have_attribute("aria-label", label or "")
    await screenshot(page, "detail-signal-zoomed")
    await reset.click()
    await expect(dialog.get_by_role("img", name=re.compile(r"^Signal"))).to_have_attribute(
        "aria-label", label or ""
    )

    # A unit that could not be converted is stored as given: the panel and table say so.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await page.set_input_files("#file-input", [str(XSENS_AU)])
    xsens = page.locator("li.file", has=page.locator(".file-name", has_text=XSENS_AU.name))
    await expect(xsens.locator(".badge")).to_have_text("Completed", timeout=60_000)
    await xsens.locator(".file-name").click()
    figure = dialog.get_by_role("img", name=re.compile(r"^Signal"))
    await expect(figure).to_have_attribute("aria-label", re.compile(r"magnetometer mx, my, mz in a\.u\.;"))
    await expect(figure).to_have_attribute("aria-label", re.compile(r"4 points by sample index"))
    await expect(figure.locator("svg.signal-panel[data-sensor=m] .panel-title")).to_have_text(
        "Magnetometer (a.u.): mx, my, mz"
    )
    await expect(figure.locator("svg.signal-panel[data-sensor=a] .panel-title")).to_contain_text("(m/s²)")
    mx = dialog.locator("table.ranges tbody tr", has=page.locator("th", has_text="mx"))
    await expect(mx.locator("td").last).to_have_text("a.u.")

    # A file of four sensors (APDM): one at a time, chosen beside the figure.
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await page.set_input_files("#file-input", [str(APDM)])
    apdm = page.locator("li.file", has=page.locator(".file-name", has_text=APDM.name))
    await expect(apdm.locator(".badge")).to_have_text("Completed", timeout=60_000)
    await apdm.locator(".file-name").click()
    picker = dialog.get_by_label("Sensor")
    await expect(picker.locator("option")).to_have_count(4)
    names = [await o.text_content() or "" for o in await picker.locator("option").all()]
    figure = dialog.get_by_role("img", name=re.compile(r"^Signal"))
    of = [re.compile(f"^Signal preview of {re.escape(name)}: ") for name in names]
    await expect(figure).to_have_attribute("aria-label", of[0])
    first = await figure.get_attribute("aria-label")
    await picker.focus()
    await picker.select_option(names[2])
    await expect(figure).to_have_attribute("aria-label", of[2])
    assert await figure.get_attribute("data-points") == "800"  # 1,024 samples per sensor
    await expect(dialog.get_by_label("Sensor")).to_be_focused()  # the redraw kept the keyboard there
    await expect(figure.locator("svg.signal-panel")).to_have_count(3)
    assert first != await figure.get_attribute("aria-label")
    # Its gyroscope ticks are small numbers ("-0.0209"): each label starts inside its panel.
    lefts = await figure.locator("svg.signal-panel text.axis").evaluate_all(
        "ts => ts.map(t => t.getBBox().x)"
    )
    assert len(lefts) == 3 * 7 and min(lefts) >= 0, lefts  # 3 value and 3 time ticks and a title each
    await screenshot(page, "detail-signal-sensors")


def paused_walk(path: Path, rows: int) -> Path:
    """A 100 Hz recording (s, g, rad/s) with three 2 s pauses, written like a logger does."""
    i = np.arange(rows)
    t = i * 0.01 + 2.0 * sum((i >= k * rows // 4) for k in (1, 2, 3))
    acc = np.column_stack([np.sin(i / 40), np.cos(i / 90), 1 + 0.1 * np.sin(i / 7)])
    body = np.column_stack([t, acc, 0.1 * acc])
    header = ",".join(
        ["Time (s)", *(f"Accelerometer {a} (g)" for a in "XYZ"), *(f"Gyroscope {a} (rad/s)" for a in "XYZ")]
    )
    np.savetxt(path, body, fmt=["%.2f"] + ["%.5f"] * 6, delimiter=",", header=header, comments="")
    return path


async def test_the_signal_refreshes_while_parsing_and_notes_the_gaps(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page, tmp_path: Path
) -> None:
    walk = await asyncio.to_thread(paused_walk, tmp_path / "paused-walk.csv", 200_000)
    stack = await service_stack(test_settings, env={**SMALL_BATCHES, "IMUFLOW_BATCH_SIZE": "1000"})
    token = await make_token(database_url, "researcher")
    await sign_in(page, stack.progress_url, token)
    await page.set_input_files("#file-input", str(walk))
    row = page.locator("li.file", has=page.locator(".file-name", has_text=walk.name))
    bar = row.get_by_role("progressbar")
    # While this long file moves its bar, every number shown has its fill exactly there.
    seen: set[int] = set()
    for _ in range(2400):
        fraction, value, shown, waiting = await row.evaluate(FILL_AND_NUMBER)
        if not waiting:
            assert shown == f"{value}%" and abs(fraction - value / 100) <= 0.002, (fraction, value, shown)
            seen.add(value)
        if len(seen) >= 3 and value >= 2:  # three different numbers, each with its fill
            break
        await page.wait_for_timeout(50)
    assert len(seen) >= 3 and max(seen) >= 2, seen
    await row.locator(".file-name").click()
    dialog = page.locator("#detail")
    figure = dialog.get_by_role("img", name=re.compile(r"^Signal preview: accelerometer"))
    await expect(figure).to_be_visible()
    first = await figure.get_attribute("aria-label")
    # The API's preview covers what is stored so far, and grows while the file parses.
    file_id = await row.get_attribute("data-id")
    preview_url = f"{stack.progress_url}/api/files/{file_id}/preview?points=100"
    ends = []
    for _ in range(200):
        answer = await page.request.get(preview_url)
        assert answer.ok, await answer.text()
        ends.append((await answer.json())["t_end_ns"])
        if len(set(ends)) >= 2:
            break
        await page.wait_for_timeout(100)
    assert ends[-1] > ends[0], ends
    assert int(await bar.get_attribute("aria-valuenow") or "0") < 100, "finished before the preview grew"
    # While batches land the figure is redrawn over the longer span stored by then.
    await expect(dialog.get_by_role("img", name=re.compile(r"^Signal"))).not_to_have_attribute(
        "aria-label", first or "", timeout=30_000
    )
    assert int(await bar.get_attribute("aria-valuenow") or "0") < 100, "finished before a redraw was seen"
    await expect(row.locator(".badge")).to_have_text("Completed", timeout=120_000)
    await expect(dialog.locator(".gap-note")).to_have_text(
        re.compile(r"^This recording has 3 gaps longer than 5 sample periods \(longest 2 s\)"), timeout=10_000
    )
    await expect(dialog.locator(".signal-side")).to_contain_text("100 Hz")
    await screenshot(page, "detail-signal-gaps")
