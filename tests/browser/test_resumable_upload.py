"""A 100 MB upload through the page (tus): it survives ingest being killed mid-way, and
after a reload the same file continues from where it stopped; the file parses exactly.

"Mid-way" is deterministic: Chromium's own network throttling (DevTools protocol) holds
the upload to 25 MB/s, and the test acts on the offsets ingest has recorded in Postgres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from playwright.async_api import CDPSession, Page, Request, expect
from pyarrow import csv

from imuflow.settings import Settings
from tests.browser.conftest import screenshot, sign_in
from tests.e2e.helpers import make_token
from tests.faults.helpers import fetchval, kill, service_pid, wait_for, wait_terminal
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.browser, pytest.mark.timeout(300)]
MB = 1_000_000
MIB = 1024 * 1024
UPLOAD_RATE = 25 * MB  # bytes/s


def wide_csv(path: Path, target_bytes: int) -> int:
    """A generic CSV of about `target_bytes`, written by Arrow's C++ writer (np.savetxt
    takes a minute for 100 MB); full-precision doubles, so fewer samples to parse. Its rows."""
    rows = target_bytes // 125
    rng = np.random.default_rng(7)
    columns = {"time": np.arange(rows) / 100.0}
    for name in ("ax (g)", "ay (g)", "az (g)", "gx (deg/s)", "gy (deg/s)", "gz (deg/s)"):
        columns[name] = rng.normal(size=rows)
    with path.open("wb") as f:
        f.write((",".join(columns) + "\n").encode())  # Arrow would quote the header's names
        csv.write_csv(pa.table(columns), f, csv.WriteOptions(include_header=False))
    return rows


async def throttle(page: Page) -> CDPSession:
    """Hold this page's uploads to UPLOAD_RATE."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": UPLOAD_RATE},
    )
    return cdp


async def offset_at_least(database_url: str, n: int, timeout: float = 60) -> int:
    value: int = await wait_for(
        database_url,
        "SELECT upload_offset FROM tus_uploads WHERE upload_offset >= $1",
        n,
        timeout=timeout,
        interval=0.05,
        what=f"{n:,} bytes stored",
    )
    return value


async def test_page_upload_survives_an_ingest_kill_and_a_reload(
    test_settings: Settings, service_stack: StartStack, database_url: str, page: Page, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings, env={"IMUFLOW_BATCH_SIZE": "100000"})
    token = await make_token(database_url, "alice")
    path = tmp_path / "long-walk.csv"
    rows = wide_csv(path, 100 * MB)
    size = path.stat().st_size
    assert size >= 99 * MB

    await sign_in(page, stack.progress_url, token)
    await throttle(page)
    await page.set_input_files("#file-input", str(path))
    upload_row = page.locator("li.upload")
    await expect(upload_row.locator(".upload-toggle")).to_have_text("Pause")

    # Ingest dies with about a fifth stored; the page carries on by itself.
    await offset_at_least(database_url, 16 * MIB)
    kill(service_pid(stack.supervisor, "ingest"))
    before_reload = await offset_at_least(database_url, 56 * MIB)
    assert before_reload < size
    await screenshot(page, "resumable-upload-in-progress")

    # Reload mid-way and pick the same file again: it continues from the stored offset.
    await page.reload()
    await expect(page.locator("#workspace")).to_be_visible()
    await throttle(page)
    sent: list[tuple[str, dict[str, str]]] = []

    async def record(request: Request) -> None:
        if "/api/uploads" in request.url and request.method in ("POST", "PATCH"):
            sent.append((request.method, await request.all_headers()))

    page.on("request", record)
    await page.set_input_files("#file-input", str(path))
    file_id = await wait_for(
        database_url,
        "SELECT file_id::text FROM tus_uploads WHERE completed_at IS NOT NULL",
        timeout=60,
        what="the upload to finish",
    )
    final = await wait_terminal(database_url, file_id, timeout=150)
    assert (final.status, final.samples, final.distinct) == ("completed", rows, rows), final
    await expect(page.locator("li.file", has_text="long-walk.csv")).to_contain_text("Completed")

    patches = [headers for method, headers in sent if method == "PATCH"]
    assert patches and all(method == "PATCH" for method, _ in sent)  # no new upload was created
    first = int(patches[0]["upload-offset"])
    assert first >= before_reload  # nothing stored before the reload was sent again
    assert sum(int(h["content-length"]) for h in patches) == size - first
    assert await fetchval(database_url, "SELECT count(*) FROM tus_uploads") == 1
    assert (
        await fetchval(database_url, "SELECT size_bytes FROM imu_data_files WHERE id = $1::uuid", file_id)
        == size
    )
