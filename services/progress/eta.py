"""Smoothed rate and ETA with an uncertainty range, computed server-side per batch.

The rate is measured in bytes, so the ETA is meaningful from the first batch even when
the sample total is still an estimate. Each batch gives one rate measurement: the bytes
it covered over the wall time since the previous batch completed (what the user waits
through, including commit and hand-over). Measurements are smoothed with a
bias-corrected exponential moving average (tqdm's method), and a second average of the
relative deviation gives the low/high range. The state is a small JSON dict stored on
the file row, so any progress-service replica can continue it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALPHA = 0.3  # weight of the newest measurement (tqdm's default smoothing)
SPREAD = 2.0  # the range covers about two deviations either side


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
    if last_t is None or completed_at <= last_t:
        # First batch of an attempt: the batch's own duration is all we have.
        seconds = max(batch_seconds, 1e-6)
        bytes_per_sample = bytes_processed / total_samples if total_samples else 0.0
        byte_rate = samples_in_batch * bytes_per_sample / seconds
        sample_rate = samples_in_batch / seconds
    else:
        seconds = completed_at - float(last_t)
        byte_rate = max(bytes_processed - int(state.get("b", 0)), 0) / seconds
        sample_rate = max(total_samples - int(state.get("s", 0)), 0) / seconds
    n = int(state.get("n", 0)) + 1
    raw_b = _ema(state.get("rb"), byte_rate)
    raw_s = _ema(state.get("rs"), sample_rate)
    correction = 1 - (1 - ALPHA) ** n  # tqdm's bias correction for a zero-started average
    rate_b = raw_b / correction
    rate_s = raw_s / correction
    deviation = abs(byte_rate - rate_b) / rate_b if rate_b > 0 else 0.0
    raw_dev = _ema(state.get("rd"), deviation)
    spread = raw_dev / correction
    new_state = {
        "t": completed_at,
        "b": bytes_processed,
        "s": total_samples,
        "n": n,
        "rb": raw_b,
        "rs": raw_s,
        "rd": raw_dev,
    }
    remaining = max(bytes_total - bytes_processed, 0)
    if rate_b <= 0:
        return Estimate(rate_s or None, None, None, None, new_state)
    eta = remaining / rate_b
    low = remaining / (rate_b * (1 + SPREAD * spread))
    high = remaining / (rate_b * max(1 - SPREAD * spread, 0.25))
    return Estimate(rate_s, eta, low, high, new_state)


def _ema(previous: Any, value: float) -> float:
    prev = float(previous) if previous is not None else 0.0
    return ALPHA * value + (1 - ALPHA) * prev
