"""`GET /api/files?limit=&cursor=` (SPEC §7 "Paging"): an opaque cursor ordered by
(created_at, id), so paging one file at a time through a ZIP, whose streams share one
created_at, sees every stream exactly once; `before` keeps working."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncpg
import httpx
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import bearer, make_token
from tests.ingest.test_archive import phyphox_zip, sensor_logger_zip
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def _page_all(client: httpx.AsyncClient, url: str, token: str, limit: int) -> list[dict[str, object]]:
    seen: list[dict[str, object]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, str | int] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"{url}/api/files", headers=bearer(token), params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= limit
        seen += body["items"]
        cursor = body["next"]
        if cursor is None:
            return seen
    raise AssertionError("paging did not end")


async def test_paging_one_at_a_time_through_zips_sees_each_stream_once(
    tmp_path: Path, test_settings: Settings, service_stack: StartStack, database_url: str
) -> None:
    stack = await service_stack(
        test_settings, {"IMUFLOW_UPLOAD_BURST": "60"}, services=("ingest", "progress")
    )
    token = await make_token(database_url, "alice")
    other = await make_token(database_url, "bob")
    async with httpx.AsyncClient(timeout=60) as client:
        ids: set[str] = set()
        for path in (phyphox_zip(tmp_path / "a.zip"), sensor_logger_zip(tmp_path / "b.zip")):
            with path.open("rb") as f:
                up = await client.post(
                    f"{stack.ingest_url}/api/files", headers=bearer(token), files={"file": (path.name, f)}
                )
            assert up.status_code == 202, up.text
            assert len(up.json()["children"]) >= 2
            ids |= {up.json()["id"], *up.json()["children"]}
        single = await client.post(
            f"{stack.ingest_url}/api/files",
            headers=bearer(token),
            files={"file": ("one.csv", b"time,ax,ay,az\n0,1,2,3\n")},
        )
        ids.add(single.json()["id"])
        await client.post(
            f"{stack.ingest_url}/api/files",
            headers=bearer(other),
            files={"file": ("bob.csv", b"time,ax,ay,az\n0,1,2,3\n")},
        )

        conn = await asyncpg.connect(database_url)
        try:
            shared = await conn.fetchval(
                "SELECT max(n) FROM (SELECT count(*) AS n FROM imu_data_files GROUP BY created_at) c"
            )
        finally:
            await conn.close()
        assert shared >= 3, "the ZIP's streams should share one created_at (what this test is about)"

        whole = await client.get(f"{stack.progress_url}/api/files", headers=bearer(token))
        assert whole.json()["next"] is None
        newest_first = [r["id"] for r in whole.json()["items"]]
        assert set(newest_first) == ids

        for limit in (1, 2, 3):
            seen = await _page_all(client, stack.progress_url, token, limit)
            got = [r["id"] for r in seen]
            assert got == newest_first, f"limit={limit}: pages skipped or repeated files"

        # `before` keeps working, and narrows a cursor's pages too.
        oldest = whole.json()["items"][-1]["created_at"]
        before = await client.get(
            f"{stack.progress_url}/api/files", headers=bearer(token), params={"before": oldest}
        )
        assert before.status_code == 200 and before.json()["items"] == []
        first = await client.get(
            f"{stack.progress_url}/api/files", headers=bearer(token), params={"limit": 1}
        )
        assert first.json()["next"]

        # A cursor is opaque; anything else is a clear 400, never a 500.
        forged = base64.urlsafe_b64encode(b"1|2026-01-01T00:00:00+00:00|not-a-uuid").decode()
        for bad in ("x", "not-a-cursor!!", forged, "MXwxfDI"):
            answer = await client.get(
                f"{stack.progress_url}/api/files", headers=bearer(token), params={"cursor": bad}
            )
            assert answer.status_code == 400, (bad, answer.text)
            assert "cursor" in answer.json()["detail"]
