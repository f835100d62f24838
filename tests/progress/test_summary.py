"""The summary of one sensor's row of the `file_summary` query."""

from __future__ import annotations

from typing import Any

import pytest

from services.progress.summary import AXES, QUERIES, sensor_summary


def query_row(**values: Any) -> dict[str, Any]:
    """A `file_summary` row with every axis absent unless given."""
    row: dict[str, Any] = {"sensor": None, "samples": 0, "t_min_ns": None, "t_max_ns": None}
    for axis in AXES:
        row[f"{axis}_min"] = row[f"{axis}_max"] = None
    row.update(values)
    return row


def test_rate_duration_and_only_the_axes_present() -> None:
    row = query_row(samples=101, t_min_ns=1_000, t_max_ns=1_000 + 2_000_000_000, ax_min=-9.5, ax_max=9.8)
    summary = sensor_summary(row)
    assert summary.duration_seconds == 2.0
    assert summary.sample_rate_hz == pytest.approx(50.0)  # 101 samples span 100 intervals
    assert set(summary.ranges) == {"ax"}
    assert summary.ranges["ax"].min == -9.5


def test_no_time_base_or_a_single_sample_has_no_rate() -> None:
    assert sensor_summary(query_row(samples=10, gx_min=0.0, gx_max=1.0)).sample_rate_hz is None
    single = sensor_summary(query_row(samples=1, t_min_ns=5, t_max_ns=5))
    assert single.duration_seconds == 0.0
    assert single.sample_rate_hz is None


def test_the_query_is_one_grouped_statement_over_imu_samples() -> None:
    sql = QUERIES["file_summary"]
    assert "FROM imu_samples" in sql and "GROUP BY sensor" in sql and ";" not in sql
