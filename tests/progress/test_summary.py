"""The summary of one sensor's row of the `file_summary` query."""

from __future__ import annotations

from typing import Any

import pytest

from services.progress.summary import AXES, QUERIES, sensor_summary


def query_row(**values: Any) -> dict[str, Any]:
    """A `file_summary` row with every axis absent unless given."""
    row: dict[str, Any] = {"sensor": "", "samples": 0, "t_min_ns": None, "t_max_ns": None}
    for axis in AXES:
        row[f"{axis}_min"] = row[f"{axis}_max"] = None
    row.update(values)
    return row


def test_rate_from_the_median_interval_duration_and_only_the_axes_present() -> None:
    row = query_row(samples=101, t_min_ns=1_000, t_max_ns=1_000 + 3_000_000_000, ax_min=-9.5, ax_max=9.8,
                    ax_mean=0.25, period=20_000_000.0, longest_gap_ns=1_000_000_000, gaps=1)  # fmt: skip
    summary = sensor_summary(row)
    assert summary.duration_seconds == 3.0
    assert summary.sample_rate_hz == pytest.approx(50.0)  # the 1 s gap does not lower it
    assert (summary.gaps, summary.longest_gap_seconds) == (1, 1.0)
    assert set(summary.ranges) == {"ax"}
    assert (summary.ranges["ax"].min, summary.ranges["ax"].mean, summary.ranges["ax"].clipped) == (
        -9.5,
        0.25,
        None,
    )


def test_no_time_base_or_a_single_sample_has_no_rate() -> None:
    assert sensor_summary(query_row(samples=10, gx_min=0.0, gx_max=1.0)).sample_rate_hz is None
    single = sensor_summary(query_row(samples=1, t_min_ns=5, t_max_ns=5))
    assert single.duration_seconds == 0.0
    assert single.sample_rate_hz is None


def test_the_queries_are_single_grouped_statements() -> None:
    assert "FROM imu_preview_blocks" in QUERIES["block_summary"] and "GROUP BY" in QUERIES["block_summary"]
    sql = QUERIES["file_summary"]
    assert "FROM imu_samples" in sql and "GROUP BY sensor" in sql and ";" not in sql
