"""Smoothed rate and ETA with an uncertainty range, computed server-side per batch.

Each batch is one measurement: the bytes (and samples) it covered over the wall time since
the previous batch completed, i.e. what the user waits through, commit and hand-over
included. Bytes drive the ETA, so it is meaningful from the first batch even while the
sample total is an estimate; samples give the displayed samples/s.

The state keeps exponentially decayed sums of bytes, samples and seconds for a few
memories (`TAUS`, seconds of wall time): each ratio is the rate over about the last tau
seconds, every second counting once whatever the batch cadence. The ETA blends them around
the memory that matches a fraction (the horizon) of the time still to go, so it follows a
change of speed without jumps. How long that memory should be depends on the machine, and
the batches tell which machine it is: when the batch rate barely jitters (a quiet server),
a change of speed is real and usually lasts, and the last few seconds forecast best; when
it jitters strongly (a heavily shared server), a short memory forecasts mostly noise and the
long-run average does better. So the horizon slides from HORIZON_QUIET to HORIZON_BUSY with
the measured jitter. A stall (a batch far later than usual) counts its excess seconds at
STALL_WEIGHT. The range is the ETA scaled by the recent log-deviation of batch rates from
the average. The constants were chosen by replaying real traces (docs/eta.md,
`make eta-eval`) on the first recorded sets and checked on a set recorded afterwards; a
change detector, memories weighted by their own forecast skill and a trend term were
measured there and dropped.

The server only updates on batches. `at(state, now)` gives the ETA between batches: it
counts down, and once a batch is `STALL_FACTOR` usual intervals late it grows, as if the
overdue batch ended now. The state is a small JSON dict stored on the file row, so any
progress-service replica can continue it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TAUS = (2.0, 3.0, 10.0, 30.0, 100.0, 1000.0)  # memories of the averages, seconds of wall time
# The ETA trusts the averages whose memory is about HORIZON x their own ETA. HORIZON depends
# on how much the batch rate jitters from one batch to the next. While it is steady, a change
# of speed is real and usually lasts, so the recent speed forecasts best (a short memory:
# QUIET). When it jitters strongly (a heavily shared server), a short memory forecasts mostly
# noise and the long-run average does better (BUSY). Chosen on the recorded trace sets 1-3,
# checked on set 4 (docs/eta.md).
HORIZON_QUIET = 0.04
HORIZON_BUSY = 10.0
JITTER_SPLIT = 0.22  # mean |change of log rate| between batches where the two meet
JITTER_WIDTH = 0.02  # how gradually (logistic width)
JITTER_MEMORY = 100.0  # seconds of wall time the jitter is averaged over
JITTER_CLIP = 0.5  # one batch's change counts at most this much (a stall, like any big swing)
BLEND = 0.5  # width, in log-memory, of the blend between neighbouring averages
SPREAD = 2.0  # the range covers about this many log-deviations either side
MIN_SPREAD = 0.05  # never claim to be more precise than +-5 %
STALL_FACTOR = 3.0  # a batch this many usual intervals late means the job is stalling
STALL_MIN_SECONDS = 2.0
STALL_WEIGHT = 0.1  # how much a stall's excess seconds count once it is over


@dataclass(frozen=True)
class Estimate:
    """What the file record shows."""

    samples_per_second: float | None
    eta_seconds: float | None
    eta_low_seconds: float | None
    eta_high_seconds: float | None
    state: dict[str, Any]


def update(
    state: dict[str, Any],
    *,
    completed_at: float,
    batch_seconds: float,
    samples_in_batch: int,
    total_samples: int,
    bytes_processed: int,
    bytes_total: int,
) -> Estimate:
    """Fold one batch into the estimator `state` (a dict from a previous call, or {})."""
    last_t = state.get("t")
    if last_t is None or completed_at <= float(last_t) or not _compatible(state):
        # First batch of an attempt: the batch's own duration is all we have, and a resumed
        # job's byte counter includes bytes parsed before, so scale the batch's samples.
        dt = max(batch_seconds, 1e-6)
        bytes_per_sample = bytes_processed / total_samples if total_samples else 0.0
        db = samples_in_batch * bytes_per_sample
        ds = float(samples_in_batch)
        state = {}
    else:
        dt = completed_at - float(last_t)
        db = float(max(bytes_processed - int(state.get("b", 0)), 0))
        ds = float(max(total_samples - int(state.get("s", 0)), 0))
    new = _fold(state, dt, db, ds)
    new.update(t=completed_at, b=bytes_processed, s=total_samples, r=max(bytes_total - bytes_processed, 0))
    return _estimate(new, float(new["r"]))


def at(state: dict[str, Any], now: float) -> Estimate:
    """The estimate at time `now` between batches: counting down, growing once a batch is overdue."""
    if "t" not in state or not _compatible(state):
        return Estimate(None, None, None, None, state)
    elapsed = max(now - float(state["t"]), 0.0)
    remaining = float(state.get("r", 0))
    interval = float(state["it"]) / float(state["iw"]) if float(state.get("iw", 0)) > 0 else 1.0
    cap = max(STALL_FACTOR * interval, STALL_MIN_SECONDS)
    counted = _shifted(_estimate(state, remaining), -min(elapsed, cap))
    if elapsed <= cap or counted.eta_seconds is None:
        return counted
    # Overdue: pretend the batch in flight (a usual batch's bytes) ends now, and add how
    # much that raises the ETA over it ending at the overdue mark: continuous, then growing.
    rate_b, rate_s = _rates(state, len(TAUS) - 1)

    def pretend(seconds: float) -> float:
        folded = _fold(state, seconds, rate_b * interval, rate_s * interval)
        # Blend weights from before the stall: every average's ETA grows with the wait, so
        # with fixed weights so does the blend (re-weighting would switch memories mid-stall
        # and make the shown ETA fall back and forth).
        return _estimate(folded, remaining, weigh_by=state).eta_seconds or 0.0

    return _shifted(counted, max(pretend(elapsed) - pretend(cap), 0.0))


def _compatible(state: dict[str, Any]) -> bool:
    """Whether `state` was written with the current TAUS (an older release kept fewer)."""
    return len(state.get("ab", ())) == len(TAUS)


def _rates(state: dict[str, Any], k: int) -> tuple[float, float]:
    """Bytes/s and samples/s of the average with memory TAUS[k]."""
    seconds = float(state["at"][k]) if "at" in state else 0.0
    if seconds <= 0:
        return 0.0, 0.0
    return float(state["ab"][k]) / seconds, float(state["as"][k]) / seconds


def _fold(state: dict[str, Any], dt: float, db: float, ds: float) -> dict[str, Any]:
    """The averages after one measurement of `db` bytes and `ds` samples in `dt` seconds."""
    n = len(TAUS)
    ab = [float(x) for x in state.get("ab", [0.0] * n)]
    as_ = [float(x) for x in state.get("as", [0.0] * n)]
    at_ = [float(x) for x in state.get("at", [0.0] * n)]
    # Exponentially decayed sums of bytes, samples and seconds; their ratio is the rate
    # over about the last tau seconds of wall time, each second counting once whatever the
    # batch cadence (an EMA of per-batch values would count long batches twice). Started
    # from zero they need no bias correction: the ratio is right from the first batch.
    counted = dt
    if float(state.get("iw", 0)) > 0:
        # A batch far later than usual (a stall) counts its excess seconds at STALL_WEIGHT:
        # one lock or pause says little about the speed of the rest of the file.
        usual = float(state["it"]) / float(state["iw"])
        cap = max(STALL_FACTOR * usual, STALL_MIN_SECONDS)
        if dt > cap:
            counted = cap + STALL_WEIGHT * (dt - cap)
    for k, tau in enumerate(TAUS):
        decay = math.exp(-counted / tau)
        ab[k] = decay * ab[k] + db
        as_[k] = decay * as_[k] + ds
        at_[k] = decay * at_[k] + counted
    new: dict[str, Any] = {k: state[k] for k in ("t", "b", "s", "r") if k in state}
    new.update(ab=ab, at=at_, **{"as": as_})
    # The usual batch interval, for stall detection.
    new["it"] = 0.7 * float(state.get("it", 0)) + 0.3 * dt
    new["iw"] = 0.7 * float(state.get("iw", 0)) + 0.3
    # The spread of batch rates around the TAUS[1] average, for the range.
    rate = _rates(new, min(1, n - 1))[0]
    measured = db / dt if dt > 0 else 0.0
    dev = math.log(measured / rate) if rate > 0 and measured > 0 else 0.0
    a_v = 1 - math.exp(-dt / TAUS[min(1, n - 1)])
    new["v"] = (1 - a_v) * float(state.get("v", 0)) + a_v * dev * dev
    new["vw"] = (1 - a_v) * float(state.get("vw", 0)) + a_v
    # The jitter: how much the batch rate changes from one batch to the next, on average.
    log_rate = math.log(measured) if measured > 0 else None
    new["j"], new["jw"] = state.get("j", 0.0), state.get("jw", 0.0)
    if log_rate is not None and state.get("lr") is not None:
        a_j = 1 - math.exp(-dt / JITTER_MEMORY)
        change = min(abs(log_rate - float(state["lr"])), JITTER_CLIP)
        new["j"] = (1 - a_j) * float(new["j"]) + a_j * change
        new["jw"] = (1 - a_j) * float(new["jw"]) + a_j
    new["lr"] = log_rate if log_rate is not None else state.get("lr")
    return new


def _horizon(state: dict[str, Any]) -> float:
    """HORIZON for the jitter seen so far: QUIET while batches are steady, BUSY once they jitter."""
    weight = float(state.get("jw", 0))
    jitter = float(state.get("j", 0)) / weight if weight > 0 else 0.0
    busy = 1 / (1 + math.exp(-(jitter - JITTER_SPLIT) / JITTER_WIDTH))
    return math.exp((1 - busy) * math.log(HORIZON_QUIET) + busy * math.log(HORIZON_BUSY))


def _estimate(state: dict[str, Any], remaining: float, weigh_by: dict[str, Any] | None = None) -> Estimate:
    """Blend the averages by how well their memory matches the time still to go."""
    etas: list[tuple[float, float, float]] = []  # (weight, eta, samples/s)
    horizon = _horizon(weigh_by if weigh_by is not None else state)
    for k, tau in enumerate(TAUS):
        rate_b, rate_s = _rates(state, k)
        rate_w = _rates(weigh_by, k)[0] if weigh_by is not None else rate_b
        if rate_b <= 0 or rate_w <= 0:
            continue
        own = remaining / rate_b
        mismatch = math.log(tau / max(horizon * remaining / rate_w, 1e-3))
        etas.append((-0.5 * (mismatch / BLEND) ** 2, own, rate_s))
    if not etas:
        return Estimate(None, None, None, None, state)
    # Normalise the Gaussian log-weights by the best one: near the end every memory is far
    # from the horizon, and absolute weights would all underflow to a uniform blend.
    top = max(w for w, _, _ in etas)
    etas = [(math.exp(w - top), e, r) for w, e, r in etas]
    if remaining <= 0:
        return Estimate(etas[-1][2] or None, 0.0, 0.0, 0.0, state)
    total = sum(w for w, _, _ in etas)
    eta = math.exp(sum(w * math.log(max(e, 1e-9)) for w, e, _ in etas) / total)
    rate_s = sum(w * r for w, _, r in etas) / total
    vw = float(state.get("vw", 0))
    sigma = math.sqrt(float(state.get("v", 0)) / vw) if vw > 0 else 0.0
    spread = max(SPREAD * sigma, MIN_SPREAD)
    return Estimate(rate_s or None, eta, eta * math.exp(-spread), eta * math.exp(spread), state)


def _shifted(estimate: Estimate, seconds: float) -> Estimate:
    if estimate.eta_seconds is None:
        return estimate

    def move(x: float | None) -> float | None:
        return None if x is None else max(x + seconds, 0.0)

    return Estimate(
        estimate.samples_per_second,
        move(estimate.eta_seconds),
        move(estimate.eta_low_seconds),
        move(estimate.eta_high_seconds),
        estimate.state,
    )
