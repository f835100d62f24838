"""The ETA estimator on simulated clocks, and the harness on the recorded real traces."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from benchmarks import eta_harness
from services.progress import eta

TOTAL = 100_000_000  # bytes
BYTES_PER_SAMPLE = 100


class Job:
    """A simulated parse: batches of `interval` seconds at a settable byte rate."""

    def __init__(self, rate: float, interval: float = 0.75) -> None:
        self.rate, self.interval = rate, interval
        self.t = 0.0
        self.done = 0
        self.state: dict[str, Any] = {}
        self.last: eta.Estimate | None = None

    def batch(self, seconds: float | None = None) -> eta.Estimate:
        """One batch that took `seconds` (default: the usual interval) at the current rate."""
        full = int(self.rate * self.interval)
        step = min(full, TOTAL - self.done)
        # The last, partial batch takes its share of the interval, as a real one does.
        seconds = self.interval * step / full if seconds is None else seconds
        self.t += seconds
        self.done += step
        self.last = eta.update(
            self.state,
            completed_at=self.t,
            batch_seconds=seconds,
            samples_in_batch=step // BYTES_PER_SAMPLE,
            total_samples=self.done // BYTES_PER_SAMPLE,
            bytes_processed=self.done,
            bytes_total=TOTAL,
        )
        self.state = self.last.state
        return self.last

    def run_until(self, fraction: float) -> eta.Estimate:
        """Batches until `fraction` of the bytes are done."""
        while self.done < fraction * TOTAL:
            self.batch()
        assert self.last is not None
        return self.last

    def true_eta(self) -> float:
        """Remaining time if the current rate holds."""
        return (TOTAL - self.done) / self.rate


def test_constant_speed_is_exact_from_the_first_batch_with_a_narrow_range() -> None:
    job = Job(rate=1e6)
    first = job.batch()
    assert first.eta_seconds == pytest.approx(job.true_eta(), rel=1e-6)
    assert first.samples_per_second == pytest.approx(1e6 / BYTES_PER_SAMPLE)
    for _ in range(50):
        e = job.batch()
        assert e.eta_seconds == pytest.approx(job.true_eta(), rel=1e-6)
        assert e.eta_low_seconds is not None and e.eta_high_seconds is not None
        assert e.eta_low_seconds <= job.true_eta() <= e.eta_high_seconds
        assert e.eta_high_seconds / e.eta_low_seconds == pytest.approx(1.105, abs=0.01)  # the +-5 % floor


@pytest.mark.parametrize(
    ("factor", "at", "within_seconds"),
    [(0.5, 0.3, 10), (2.0, 0.3, 6), (0.5, 0.85, 7), (2.0, 0.85, 5)],
    ids=["slowdown-early", "speedup-early", "slowdown-late", "speedup-late"],
)
def test_a_lasting_speed_change_is_followed_smoothly(factor: float, at: float, within_seconds: float) -> None:
    job = Job(rate=1e6)
    job.run_until(at)
    job.rate *= factor
    errors, seconds = [], 0.0
    while job.done < 0.99 * TOTAL:
        e = job.batch()
        seconds += job.interval
        assert e.eta_seconds is not None
        errors.append((seconds, (e.eta_seconds - job.true_eta()) / job.true_eta()))
    # No jumps and no overshoot: every batch moves the ETA toward the truth, from one side.
    assert all(abs(b) <= abs(a) + 1e-9 for (_, a), (_, b) in itertools.pairwise(errors))
    assert all((err > 0) == (factor > 1) for _, err in errors if abs(err) > 1e-6)
    # The closer the end, the faster it follows (the memory matches the time to go).
    first_close = next(s for s, err in errors if abs(err) <= 0.10)
    assert first_close <= within_seconds


def test_noise_does_not_shake_the_eta() -> None:
    job = Job(rate=1e6)
    job.run_until(0.1)
    etas = []
    for i in range(40):  # alternately fast and slow batches around the same mean
        job.rate = 1.25e6 if i % 2 else 0.75e6
        etas.append(job.batch().eta_seconds)
    job.rate = 1e6
    worst = max(abs(e - job.true_eta()) / job.true_eta() for e in etas[-10:] if e is not None)
    assert worst < 0.15


def test_a_jittery_machine_leans_on_the_long_run_average() -> None:
    # Two jobs of the same mean speed: one steady, one whose batches swing 2.5x (a heavily
    # shared server). Then both meet the same short slowdown.
    quiet, jittery = Job(rate=1e6), Job(rate=1e6)
    quiet.run_until(0.3)
    for i in itertools.count():
        jittery.rate = 1.6e6 if i % 2 else 0.625e6
        if jittery.batch().eta_seconds is not None and jittery.done >= 0.3 * TOTAL:
            break
    moved = {}
    for name, job in (("quiet", quiet), ("jittery", jittery)):
        before = job.batch().eta_seconds
        job.rate = 0.5e6
        for _ in range(4):
            after = job.batch().eta_seconds
        assert before is not None and after is not None
        moved[name] = after / before
    # The steady job's ETA follows the slowdown (it is likely to last); the jittery job's
    # barely moves (there, speed comes and goes).
    assert moved["quiet"] > 1.3
    assert moved["jittery"] - 1 < (moved["quiet"] - 1) / 3


def test_a_stall_counts_down_then_grows_and_recovers_after() -> None:
    job = Job(rate=1e6)
    e = job.run_until(0.5)
    assert e.eta_seconds is not None
    last = job.t
    # Within the usual cadence (3 intervals) the ETA counts down from the last batch.
    soon = eta.at(job.state, last + 1.0)
    assert soon.eta_seconds == pytest.approx(e.eta_seconds - 1.0)
    # Overdue: no jump at the mark, then it grows the longer nothing arrives.
    mark = 3 * job.interval
    at_mark = eta.at(job.state, last + mark).eta_seconds
    just_after = eta.at(job.state, last + mark + 0.1).eta_seconds
    later = [eta.at(job.state, last + s).eta_seconds for s in (5.0, 10.0, 20.0)]
    assert at_mark is not None and just_after is not None and None not in later
    assert abs(just_after - at_mark) < 0.5
    assert later == sorted(later)  # type: ignore[type-var]
    assert later[2] > e.eta_seconds * 1.5  # type: ignore[operator]
    # The stall ends (a 20 s batch): the ETA rises, but a one-off pause counts only partly...
    after = job.batch(seconds=20.0)
    assert after.eta_seconds is not None
    assert job.true_eta() < after.eta_seconds < 1.5 * job.true_eta()
    # ...and it settles back as normal batches follow.
    settled = None
    for _ in range(40):
        settled = job.batch().eta_seconds
    assert settled == pytest.approx(job.true_eta(), rel=0.1)


def test_a_resumed_attempt_rates_its_first_batch_by_its_own_samples() -> None:
    # 40 % was parsed by an earlier attempt; the first batch is 1 MB in 1 s.
    e = eta.update(
        {},
        completed_at=1000.0,
        batch_seconds=1.0,
        samples_in_batch=10_000,
        total_samples=410_000,
        bytes_processed=41_000_000,
        bytes_total=TOTAL,
    )
    assert e.samples_per_second == pytest.approx(10_000)
    assert e.eta_seconds == pytest.approx(59.0)


def test_no_state_means_no_estimate() -> None:
    assert eta.at({}, 5.0).eta_seconds is None


def test_a_state_from_a_release_with_other_memories_restarts() -> None:
    job = Job(rate=1e6)
    job.run_until(0.3)
    older = {**job.state, "ab": job.state["ab"][:-1], "as": job.state["as"][:-1], "at": job.state["at"][:-1]}
    assert eta.at(older, job.t + 1.0).eta_seconds is None
    job.state = older
    job.rate = 2e6  # the next batch alone is measured, as a first batch is
    e = job.batch()
    assert e.eta_seconds == pytest.approx(job.true_eta(), rel=1e-6)
    assert len(e.state["ab"]) == len(eta.TAUS)


def _median(errors: list[float]) -> float:
    return sorted(errors)[len(errors) // 2]


def _p90(errors: list[float]) -> float:
    return sorted(errors)[int(0.9 * len(errors))]


def _set_medians(result: dict[str, Any], traces: list[eta_harness.Trace], tag: str) -> dict[str, float]:
    """Each estimator's median error on one recording set (the traces named `*-<tag>`)."""
    in_set = [t.name for t in traces if t.name.partition("-")[2] == tag]
    return {
        name: _median([e for t in in_set for e in per[t].at_batches]) for name, (_, per) in result.items()
    }


def test_the_harness_meets_the_target_on_the_quiet_machine_traces() -> None:
    traces = eta_harness.load()
    names = {"steady", "second_job", "cpu_contention", "slow_disk", "stall", "speedup"}
    tags = ("", "2", "3", "4")
    assert {t.name for t in traces} == {f"{n}-{tag}" if tag else n for n in names for tag in tags}
    result = eta_harness.evaluate(traces)
    ours, naive, tqdm = (result[n][0] for n in ("ours", "naive (seed)", "tqdm EMA 0.3"))
    # The target, pooled: median <= 10 % and better than both alternatives.
    assert _median(ours.at_batches) <= 0.10
    assert _median(ours.at_batches) < _median(tqdm.at_batches) < _median(naive.at_batches)
    assert _p90(ours.at_batches) < _p90(tqdm.at_batches)
    assert _p90(ours.at_batches) < _p90(naive.at_batches)
    assert _median(ours.between) < _median(tqdm.between)
    assert ours.missing == 0
    # And on each recording set, set 4 included: it was recorded after the constants were
    # chosen on sets 1-3 (docs/eta.md).
    for tag in tags:
        medians = _set_medians(result, traces, tag)
        assert medians["ours"] <= 0.10
        assert medians["ours"] < medians["tqdm EMA 0.3"]


def test_the_shared_machine_traces_stay_within_what_was_measured() -> None:
    traces = eta_harness.load(eta_harness.CHURN)
    assert len(traces) == 12
    result = eta_harness.evaluate(traces)
    ours, naive, tqdm = (result[n][0] for n in ("ours", "naive (seed)", "tqdm EMA 0.3"))
    # Pooled, ahead of both; on the held-out set 4 tqdm's median is 0.3 points ahead
    # (14.9 % against 15.2 %, docs/eta.md), so per set only the seed's average is beaten.
    assert _median(ours.at_batches) < _median(tqdm.at_batches) < _median(naive.at_batches)
    assert _p90(ours.at_batches) < _p90(tqdm.at_batches)
    for tag in ("3", "4"):
        medians = _set_medians(result, traces, tag)
        assert medians["ours"] < medians["naive (seed)"]
    assert ours.missing == 0


def test_the_noisy_machine_traces_stay_within_what_was_measured() -> None:
    traces = eta_harness.load(eta_harness.NOISY)
    assert len(traces) == 12
    result = eta_harness.evaluate(traces)
    ours, naive, tqdm = (result[n][0] for n in ("ours", "naive (seed)", "tqdm EMA 0.3"))
    # Passing slowdowns under other people's load: no estimator gets near 10 % (docs/eta.md).
    # The jitter moves ours to its long memories here, ahead of both on the median; on the
    # tail the seed's overall average stays ahead (p90 71 % against 83 %).
    assert _median(ours.at_batches) <= 0.25
    assert _median(ours.at_batches) < _median(naive.at_batches) < _median(tqdm.at_batches)
    assert _p90(ours.at_batches) < _p90(tqdm.at_batches)
    assert ours.missing == 0
