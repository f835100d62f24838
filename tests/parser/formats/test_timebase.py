"""Time-base inference and per-chunk conversion to int64 ns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from services.parser.formats.base import NULL_TIME
from services.parser.formats.timebase import (
    TimePlan,
    chunk_times,
    plan_numeric_time,
    rate_from_preamble,
    start_from_preamble,
)


def test_rates_from_preambles() -> None:
    assert rate_from_preamble(["-- date format M/d/yyyy at 30 Hz  Filter Normal --"]) == 30
    assert rate_from_preamble(["// Update Rate: 100.0Hz"]) == 100
    assert rate_from_preamble(["Test Name:,x", "Sample Rate:,128,Hz,,,"]) == 128
    assert rate_from_preamble(["nothing here"]) is None


def test_start_date_orders() -> None:
    start, order = start_from_preamble(
        ["date format dd/MM/yyyy at 30 Hz", "Start Time 10:05:00", "Start Date 14/05/2019"]
    )
    assert order == "dmy" and start is not None and (start.month, start.day, start.minute) == (5, 14, 5)


def test_unit_inference_by_magnitude() -> None:
    cases = {
        ("1403636579758555392", "1403636579763555392"): (1, True, "int"),
        ("1550879504438281", "1550879504446093"): (10**3, True, "int"),
        ("1700000000000", "1700000000010"): (10**6, True, "float"),
        ("0.0", "0.01"): (10**9, False, "float"),
        ("1000", "11000"): (10**3, False, "int"),
    }
    for values, (scale, epoch, kind) in cases.items():
        plan, warnings = plan_numeric_time(list(values), None, None)
        assert (plan.scale, plan.epoch, plan.kind) == (scale, epoch, kind), values
        assert warnings
    plan, warnings = plan_numeric_time(["12", "13"], "s", None)
    assert (plan.scale, plan.kind, warnings) == (10**9, "float", [])


def test_ns_stays_exact_and_bad_time_is_null() -> None:
    col = pa.array([1403636579758555393, None, 1403636579758555399], pa.int64())
    t, ok = chunk_times(TimePlan("int", 1, True), col, 0, 3, {})
    assert t.tolist() == [1403636579758555393, NULL_TIME, 1403636579758555399]
    assert ok.tolist() == [True, False, True]
    dec = pa.array(["1.40363657975856E+018", "Step: 0.005"])
    t, ok = chunk_times(TimePlan("decimal", 1, True), dec, 0, 2, {})
    assert t.tolist() == [1403636579758560000, NULL_TIME]


def test_counter_wrap_continues_across_chunks() -> None:
    state: dict[str, int] = {}
    plan = TimePlan("counter", rate_hz=100.0)
    a, _ = chunk_times(plan, pa.array([65534.0, 65535.0]), 0, 2, state)
    b, _ = chunk_times(plan, pa.array([0.0, float("nan"), 2.0]), 2, 3, state)
    assert a.tolist() == [0, 10_000_000]
    assert b.tolist() == [20_000_000, NULL_TIME, 40_000_000]


def test_synthesised_time() -> None:
    plan = TimePlan("synth", epoch=True, rate_hz=85.7, start_ns=10**18)
    t, ok = chunk_times(plan, None, 857, 2, {})
    assert t.tolist() == [10**18 + 10**10, 10**18 + 10**10 + round(1e9 / 85.7)] and ok.all()
    assert np.all(chunk_times(TimePlan("none"), None, 0, 2, {})[0] == NULL_TIME)
