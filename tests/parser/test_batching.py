"""BatchSizer: converges to the target cadence on simulated readers, never splits a record."""

from __future__ import annotations

import io

import numpy as np
import pytest

from services.parser.batching import BatchSizer
from services.parser.formats.base import ReadOptions, SampleBatch
from services.parser.formats.registry import detect_format, make_reader

HEADER = "Time (s),Accelerometer X (g),Accelerometer Y (g),Accelerometer Z (g)\n"
ROWS = 120_000


@pytest.fixture(scope="module")
def csv_bytes() -> bytes:
    """A generic CSV whose rows are numbered, so a split or lost row shows."""
    lines = [HEADER] + [f"{i / 100:.2f},{i},{i % 7 - 3}.5,1.0\n" for i in range(ROWS)]
    return "".join(lines).encode()


def drive(
    data: bytes, sizer: BatchSizer, per_sample: float, overhead: float
) -> tuple[list[SampleBatch], list[float]]:
    """Read the whole CSV with the real reader; each batch 'takes' overhead + n * per_sample."""
    reader = make_reader(detect_format(data[:65536], "imu.csv"))
    assert detect_format(data[:65536], "imu.csv") == "generic_csv"
    reader.open(io.BytesIO(data), ReadOptions(filename="imu.csv"), None)
    batches, seconds = [], []
    for batch in reader.batches(sizer):
        took = overhead + len(batch) * per_sample
        sizer.observe(len(batch), took)
        batches.append(batch)
        seconds.append(took)
    return batches, seconds


@pytest.mark.parametrize(
    ("per_sample", "start"),
    [(100e-6, 1_000), (100e-6, 25_000), (2e-3, 50_000)],
    ids=["fast-reader-small-start", "fast-reader-big-start", "slow-reader"],
)
def test_converges_to_the_target_interval(csv_bytes: bytes, per_sample: float, start: int) -> None:
    sizer = BatchSizer(start, target_seconds=0.75, min_size=100)
    _, seconds = drive(csv_bytes, sizer, per_sample, overhead=0.02)
    settled = seconds[9:-1]  # after the approach, without the file's short last batch
    assert len(settled) >= 3
    assert all(0.5 <= s <= 1.0 for s in settled), seconds
    assert sizer.rate is not None
    assert sizer() == pytest.approx(0.75 * sizer.rate, rel=0.2)


def test_never_splits_or_loses_a_record_while_the_size_moves(csv_bytes: bytes) -> None:
    sizer = BatchSizer(777, target_seconds=0.75, min_size=100)
    cost = iter(np.resize([40e-6, 5e-6, 200e-6], 10_000))

    reader = make_reader("generic_csv")
    reader.open(io.BytesIO(csv_bytes), ReadOptions(filename="imu.csv"), None)
    sizes, values = set(), []
    for batch in reader.batches(sizer):
        assert csv_bytes[batch.end_offset - 1 : batch.end_offset] == b"\n"  # ends on a record boundary
        sizes.add(len(batch))
        values.append(batch.values[:, 0])
        sizer.observe(len(batch), 0.01 + len(batch) * next(cost))
    ax = np.concatenate(values)
    assert len(sizes) > 5  # the target really moved
    g = 9.80665  # the reader stores accelerations in m/s^2
    np.testing.assert_allclose(ax / g, np.arange(ROWS), rtol=1e-6)


def test_pinned_size_never_changes(csv_bytes: bytes) -> None:
    sizer = BatchSizer(10_000, adaptive=False)
    batches, _ = drive(csv_bytes, sizer, per_sample=400e-6, overhead=0.0)
    assert [len(b) for b in batches] == [10_000] * (ROWS // 10_000)
    assert sizer() == 10_000


def test_one_slow_batch_moves_the_size_at_most_by_half_and_bounds_hold() -> None:
    sizer = BatchSizer(100_000, min_size=1_000, max_size=200_000)
    sizer.observe(100_000, 0.75)
    assert sizer() == 100_000
    sizer.observe(100_000, 60.0)  # a GC pause or a busy disk
    assert 50_000 <= sizer() < 60_000
    for _ in range(20):
        sizer.observe(sizer(), 1e-4)
    assert sizer() == 200_000
    for _ in range(60):
        sizer.observe(sizer(), 100.0)
    assert sizer() == 1_000


def test_small_corrections_keep_the_size_still() -> None:
    sizer = BatchSizer(100_000)
    sizes = []
    for took in [0.7, 0.8, 0.72, 0.78, 0.69, 0.81]:
        sizer.observe(sizer(), took)
        sizes.append(sizer())
    assert set(sizes) == {100_000}


def test_starting_size_is_floored_only_when_adaptive() -> None:
    assert BatchSizer(10, adaptive=True)() == 1_000  # raised to the floor
    assert BatchSizer(10, adaptive=False)() == 10  # pinned exactly, even below the floor


def test_a_large_fixed_cost_per_batch_is_fitted_not_crawled_towards() -> None:
    # 0.4 s of every batch is commit and hand-over: samples/s grows with the batch size,
    # so steering by the rate alone creeps up for many batches; the fit gets there.
    sizer = BatchSizer(2_000, min_size=100)
    seconds = []
    for _ in range(12):
        took = 0.4 + sizer() * 20e-6
        seconds.append(took)
        sizer.observe(sizer(), took)
    assert all(0.5 <= s <= 1.0 for s in seconds[4:]), seconds
    assert sizer() == pytest.approx((0.75 - 0.4) / 20e-6, rel=0.2)


def test_a_fixed_cost_above_the_target_gets_half_of_each_batch() -> None:
    sizer = BatchSizer(2_000, min_size=100)
    for _ in range(20):
        sizer.observe(sizer(), 1.0 + sizer() * 10e-6)
    assert sizer() == pytest.approx(1.0 / 10e-6, rel=0.2)


def test_the_ramp_from_a_small_start_takes_two_short_batches_without_overshooting() -> None:
    # Costs like the embedded stack's: 50 ms per batch plus 1.2 us per sample, so the
    # 50 000-sample starting batch takes 0.11 s. Doubling would need four batches to arrive.
    sizer = BatchSizer(50_000)
    seconds = []
    for _ in range(8):
        took = 0.05 + sizer() * 1.2e-6
        seconds.append(took)
        sizer.observe(sizer(), took)
    assert seconds[1] < 0.75  # the jump undershoots: the rate counts the fixed cost too
    assert all(0.5 <= s <= 1.0 for s in seconds[2:]), seconds


def test_noisy_batch_times_do_not_swing_the_size() -> None:
    # The stack's costs with every batch's time off by a random factor (log-normal, 30 %),
    # and a new size applying one batch late as in the parser's read-ahead. A fit on a few
    # such batches extrapolates: unchecked, it swung the size x2 back and forth.
    rng = np.random.default_rng(7)
    jumps, seconds = [], []
    for _ in range(20):
        sizer = BatchSizer(50_000)
        current = sizer()
        sizes = []
        for _ in range(60):
            upcoming = sizer()  # read ahead before this batch is observed
            took = (0.05 + current * 1.0e-6) * float(np.exp(rng.normal(0, 0.3)))
            sizer.observe(current, took)
            sizes.append(current)
            seconds.append(took)
            current = upcoming
        jumps += list(np.abs(np.diff(np.log(sizes[5:]))) > 0.5)
    assert np.mean(jumps) < 0.03  # size changes beyond x1.65 (0.5 %; without the R^2 check 9.7 %)
    assert np.percentile(seconds, 90) < 1.3
