"""pgcopy: the packed fast path writes exactly the bytes of the general masked encoder."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from services.parser import pgcopy
from services.parser.formats.base import NULL_TIME, SampleBatch

FILE_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _batch(
    n: int,
    *,
    nan_cols: tuple[int, ...] = (),
    some_nan: bool = False,
    no_time: bool = False,
    sensors: tuple[str, ...] = (),
    codes: list[int] | None = None,
) -> SampleBatch:
    rng = np.random.default_rng(n)
    values = rng.normal(0, 5, (n, 9)).astype(np.float32)
    values[:, list(nan_cols)] = np.nan
    if some_nan and n:
        values[0, 1] = np.nan
    t_ns = np.arange(n, dtype=np.int64) * 10_000_000 + 1_700_000_000_000_000_000
    if no_time:
        t_ns[:] = NULL_TIME
    sensor = None if codes is None else np.array(codes, dtype=np.int16)
    return SampleBatch(
        sample_index=np.arange(n, dtype=np.int64),
        t_ns=t_ns,
        values=values,
        end_offset=0,
        sensor=sensor,
        sensors=sensors,
    )


def _partly_timed() -> SampleBatch:
    batch = _batch(3, no_time=True)
    batch.t_ns[1] = 5
    return batch


@pytest.mark.parametrize(
    "batch",
    [
        _batch(1000),
        _batch(1000, nan_cols=(6, 7, 8)),
        _batch(1000, no_time=True),
        _batch(500, sensors=("accelerometer",), codes=[0] * 500),
        _batch(0),
    ],
    ids=["all-present", "no-magnetometer", "no-time", "one-sensor", "empty"],
)
def test_fixed_width_rows_equal_masked_rows(batch: SampleBatch) -> None:
    fast = pgcopy._fixed_width_rows(FILE_ID, batch)
    if len(batch) == 0:
        assert fast is None or fast.size == 0
        return
    assert fast is not None
    assert fast.tobytes() == pgcopy._masked_rows(FILE_ID, batch)
    assert pgcopy.encode(FILE_ID, batch) == pgcopy.HEADER + fast.tobytes() + pgcopy.TRAILER


@pytest.mark.parametrize(
    "batch",
    [_batch(100, some_nan=True), _batch(4, sensors=("a", "gyro"), codes=[0, 1, 1, 0]), _partly_timed()],
    ids=["one-null-cell", "two-sensors", "partly-timed"],
)
def test_partly_null_or_mixed_sensor_batches_use_the_masked_encoder(batch: SampleBatch) -> None:
    assert pgcopy._fixed_width_rows(FILE_ID, batch) is None
    payload = pgcopy.encode(FILE_ID, batch)
    assert payload.startswith(pgcopy.HEADER) and payload.endswith(pgcopy.TRAILER)
