"""Preview and summary on a parsed file: true per-bucket min/max, zoom, gaps, isolation."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from imuflow.settings import Settings
from tests.e2e.helpers import DATA, bearer, follow_until_done, make_token, upload
from tests.stack import ServiceStack, StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]
ROWS = 30_000
SPIKE = 12_345
GAPS_AT = (5_000, 15_000, 25_000)  # a 1 s pause before each of these rows


def recording(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 100 Hz CSV (seconds, g, deg/s) with three 1 s pauses and a one-sample spike."""
    i = np.arange(ROWS)
    t = i * 0.01 + sum((i >= g) * 1.0 for g in GAPS_AT)
    rng = np.random.default_rng(4)
    acc = np.column_stack([np.sin(i / 50), np.cos(i / 70), 1 + 0.01 * rng.standard_normal(ROWS)])
    acc[SPIKE, 0] = 7.5
    gyro = 10 * rng.standard_normal((ROWS, 3))
    lines = ["Time (s),Accelerometer X (g),Accelerometer Y (g),Accelerometer Z (g),"
             "Gyroscope X (deg/s),Gyroscope Y (deg/s),Gyroscope Z (deg/s)"]  # fmt: skip
    lines += [f"{t[k]:.2f}," + ",".join(f"{v:.5f}" for v in (*acc[k], *gyro[k])) for k in range(ROWS)]
    path.write_text("\n".join(lines) + "\n")
    return np.round(t * 100).astype(np.int64) * 10_000_000, np.round(acc, 5) * 9.80665


async def _parsed(stack: ServiceStack, token: str, path: Path) -> dict[str, Any]:
    response = await upload(stack.ingest_url, token, path)
    assert response.status_code == 202, response.text
    seen = await asyncio.wait_for(
        follow_until_done(f"{stack.progress_url}/api/files/{response.json()['id']}/events", token), 120
    )
    assert seen[-1].type == "completed", seen[-1].record
    return seen[-1].record


def expected_buckets(t: np.ndarray, v: np.ndarray, lo: int, hi: int, n: int) -> tuple[list[Any], list[Any]]:
    """Per-bucket min/max computed here, the way the API defines buckets."""
    sel = (t >= lo) & (t <= hi)
    b = np.minimum(n - 1, np.floor((t[sel] - lo) * n / (hi - lo + 1)).astype(int))
    vals = v[sel].astype(np.float32)
    mins: list[Any] = [None] * n
    maxs: list[Any] = [None] * n
    for k in range(n):
        if (b == k).any():
            mins[k], maxs[k] = float(vals[b == k].min()), float(vals[b == k].max())
    return mins, maxs


def check_within_a_quarter_bucket(
    t: np.ndarray, v: np.ndarray, lo: int, hi: int, axis: dict[str, Any]
) -> None:
    """Each bucket's min/max against the true ones of the bucket narrowed and widened by 1/4
    (to float32 rounding: the parser scales g to m/s² in float32)."""
    n = len(axis["max"])
    width = (hi - lo + 1) / n
    for k in range(n):
        a, b = lo + k * width, lo + (k + 1) * width
        outer = v[(t >= max(lo, a - width / 4)) & (t < min(hi + 1, b + width / 4))]
        inner = v[(t >= a + width / 4) & (t < b - width / 4)]
        top, bottom = axis["max"][k], axis["min"][k]
        if top is None:
            assert inner.size == 0, k
            continue
        eps = 1e-5 * max(1.0, abs(top), abs(bottom))
        assert outer.max() + eps >= top >= (inner.max() - eps if inner.size else -np.inf), k
        assert outer.min() - eps <= bottom <= (inner.min() + eps if inner.size else np.inf), k


async def test_preview_and_summary_of_a_recording_with_gaps_and_a_spike(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    # Small batches: the pyramid then spans many batches, as in a long recording.
    stack = await service_stack(
        test_settings.model_copy(update={"batch_size": 4000, "adaptive_batching": False})
    )
    token = await make_token(database_url, "researcher")
    t, acc = recording(tmp_path / "gaps.csv")
    record = await _parsed(stack, token, tmp_path / "gaps.csv")
    url = f"{stack.progress_url}/api/files/{record['id']}"
    async with httpx.AsyncClient(headers=bearer(token), timeout=30) as client:
        summary = (await client.get(f"{url}/summary")).json()
        assert summary["samples"] == ROWS
        assert summary["sample_rate_hz"] == pytest.approx(100.0, rel=1e-3)  # gaps do not bias it
        assert summary["gaps"] == 3
        assert summary["longest_gap_seconds"] == pytest.approx(1.01, abs=1e-6)
        ax = summary["sensors"][0]["ranges"]["ax"]
        assert ax["max"] == pytest.approx(7.5 * 9.80665, rel=1e-6)
        assert ax["mean"] == pytest.approx(float(np.mean(acc[:, 0].astype(np.float32))), rel=1e-4)
        assert ax["clipped"] is None  # a CSV does not say the device's range
        # Computed once: the kept row is what later requests answer (altered here to tell).
        conn = await asyncpg.connect(database_url)
        try:
            kept = await conn.execute(
                "UPDATE imu_file_summaries SET summary = jsonb_set(summary, '{gaps}', '99') "
                "WHERE file_id = $1",
                uuid.UUID(record["id"]),
            )
        finally:
            await conn.close()
        assert kept == "UPDATE 1"
        assert (await client.get(f"{url}/summary")).json() == {**summary, "gaps": 99}

        whole = (await client.get(f"{url}/preview", params={"points": 10})).json()  # from the blocks
        assert whole["points"] == 10 and (whole["t_start_ns"], whole["t_end_ns"]) == (int(t[0]), int(t[-1]))
        assert set(whole["axes"]) == {"ax", "ay", "az", "gx", "gy", "gz"}
        assert max(whole["axes"]["ax"]["max"]) == pytest.approx(7.5 * 9.80665, rel=1e-6)
        assert min(whole["axes"]["ax"]["min"]) == pytest.approx(float(acc[:, 0].min()), rel=1e-5)
        spike_bucket = (t[SPIKE] - t[0]) * 10 // (t[-1] - t[0] + 1)
        assert abs(int(np.argmax(whole["axes"]["ax"]["max"])) - spike_bucket) <= 1

        # A zoom around the spike, edges mid-block: exact against a computation here.
        lo, hi = int(t[SPIKE - 700]) + 3, int(t[SPIKE + 900]) - 3
        zoom = (
            await client.get(f"{url}/preview", params={"points": 50, "start_ns": lo, "end_ns": hi})
        ).json()
        mins, maxs = expected_buckets(t, acc[:, 0], lo, hi, 50)
        assert zoom["points"] == 50 and (zoom["t_start_ns"], zoom["t_end_ns"]) == (lo, hi)
        assert zoom["axes"]["ax"]["min"] == pytest.approx(mins) and zoom["axes"]["ax"][
            "max"
        ] == pytest.approx(maxs)

        # A wider zoom answered from blocks plus exact edges: the extremes are still exact.
        lo, hi = int(t[3_000]) + 5, int(t[27_000]) - 5
        wide = (
            await client.get(f"{url}/preview", params={"points": 12, "start_ns": lo, "end_ns": hi})
        ).json()
        inside = acc[(t >= lo) & (t <= hi), 2].astype(np.float32)
        assert max(x for x in wide["axes"]["az"]["max"] if x is not None) == pytest.approx(
            float(inside.max())
        )
        assert min(x for x in wide["axes"]["az"]["min"] if x is not None) == pytest.approx(
            float(inside.min())
        )
        # Its buckets (2,000 samples each) are made of 256-sample blocks placed by their
        # middle: each bucket's max lies between the true max of the bucket narrowed and
        # widened by a quarter bucket (README's promise), and likewise its min.
        check_within_a_quarter_bucket(t, acc[:, 2], lo, hi, wide["axes"]["az"])
        check_within_a_quarter_bucket(t, acc[:, 0], lo, hi, wide["axes"]["ax"])

        for bad in (9, 5001):
            assert (await client.get(f"{url}/preview", params={"points": bad})).status_code == 422
        other = await make_token(database_url, "someone-else")
        for path in ("preview", "summary"):
            assert (await client.get(f"{url}/{path}", headers=bearer(other))).status_code == 404

        # A pause far longer than a bucket inside one block: those buckets stay empty (the
        # block is refined down to its samples instead of being placed in the middle).
        pause = tmp_path / "pause.csv"
        t_s = np.arange(20_000) * 0.01 + (np.arange(20_000) >= 10_100) * 600.0
        pause.write_text("Time (s),ax,ay,az\n" + "".join(f"{x:.2f},1,2,{k % 5}\n" for k, x in enumerate(t_s)))
        paused = await _parsed(stack, token, pause)
        p = (
            await client.get(f"{stack.progress_url}/api/files/{paused['id']}/preview", params={"points": 10})
        ).json()
        expected_min, expected_max = expected_buckets(
            np.round(t_s * 100).astype(np.int64) * 10_000_000,
            np.arange(20_000) % 5,
            p["t_start_ns"],
            p["t_end_ns"],
            10,
        )
        assert p["axes"]["az"]["min"] == expected_min and p["axes"]["az"]["max"] == expected_max
        assert expected_max.count(None) >= 6

        # A real .cwa gives its device range (+-8 g): 4 samples of az are at full scale.
        cwa = await _parsed(stack, token, DATA / "ggirread_ax3_testfile.cwa")
        s = (await client.get(f"{stack.progress_url}/api/files/{cwa['id']}/summary")).json()
        # Set to 100 Hz, but its blocks' timestamps span 176 s: the rate measured is ~98.8 Hz.
        assert s["samples"] == 17_400 and s["sample_rate_hz"] == pytest.approx(98.8, abs=0.1)
        ranges = s["sensors"][0]["ranges"]
        assert set(ranges) == {"ax", "ay", "az"}
        assert [ranges[a]["clipped"] for a in ("ax", "ay", "az")] == [0, 0, 4]
        assert ranges["az"]["max"] == pytest.approx(78.29997, rel=1e-6)


async def test_preview_by_sample_index_without_time_and_by_sensor(
    test_settings: Settings, service_stack: StartStack, database_url: str, tmp_path: Path
) -> None:
    stack = await service_stack(test_settings)
    token = await make_token(database_url, "researcher")
    path = tmp_path / "notime.csv"
    path.write_text("ax,ay,az\n" + "".join(f"{k % 10},{-k % 3},1\n" for k in range(40)))
    record = await _parsed(stack, token, path)
    async with httpx.AsyncClient(headers=bearer(token), timeout=30) as client:
        p = (
            await client.get(f"{stack.progress_url}/api/files/{record['id']}/preview", params={"points": 20})
        ).json()
        assert (p["points"], p["t_start_ns"], p["t_end_ns"]) == (20, None, None)
        assert p["axes"]["ax"]["max"][:3] == [1.0, 3.0, 5.0]  # indexes 0-1, 2-3, 4-5
        s = (await client.get(f"{stack.progress_url}/api/files/{record['id']}/summary")).json()
        assert s["samples"] == 40 and s["sample_rate_hz"] is None and s["gaps"] is None

        # A file of several sensors: one at a time, the first unless `sensor` names another.
        apdm = await _parsed(stack, token, DATA / "opensim_imuData01.csv")
        url = f"{stack.progress_url}/api/files/{apdm['id']}"
        sensors = [x["sensor"] for x in (await client.get(f"{url}/summary")).json()["sensors"]]
        assert len(sensors) == 4
        default = (await client.get(f"{url}/preview", params={"points": 10})).json()
        first = (await client.get(f"{url}/preview", params={"points": 10, "sensor": sensors[0]})).json()
        last = (await client.get(f"{url}/preview", params={"points": 10, "sensor": sensors[-1]})).json()
        assert default == first != last and first["points"] == 10
        assert set(first["axes"]) == {"ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz"}
        missing = await client.get(f"{url}/preview", params={"sensor": "no-such-sensor"})
        assert missing.status_code == 404

        # A re-parse from scratch replaces the pyramid and the kept summary (no duplicates).
        summary = (await client.get(f"{url}/summary")).json()
        again = await client.post(f"{url}/reparse", json={})
        assert again.status_code == 200, again.text
        seen = await asyncio.wait_for(follow_until_done(f"{url}/events", token), 120)
        assert seen[-1].type == "completed" and seen[-1].record["run"] == 2
        assert (await client.get(f"{url}/preview", params={"points": 10})).json() == default
        assert (await client.get(f"{url}/summary")).json() == summary
    conn = await asyncpg.connect(database_url)
    try:
        blocks = await conn.fetchval(
            "SELECT count(*) FROM imu_preview_blocks WHERE file_id = $1 AND level = 256",
            uuid.UUID(apdm["id"]),
        )
        kept = await conn.fetchval(
            "SELECT run FROM imu_file_summaries WHERE file_id = $1", uuid.UUID(apdm["id"])
        )
    finally:
        await conn.close()
    assert (blocks, kept) == (16, 2)  # 4 sensors x 1,024 samples = 4 x 4 fine blocks, once
