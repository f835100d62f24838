"""Batch size control: checkpoints at a steady cadence whatever the file and machine.

The parser asks for a target size before each batch (`sizer()`) and reports the batch's
samples and wall time afterwards (`observe`). A batch costs a fixed part (commit,
checkpoint, hand-over) plus a part per sample, and the fixed part matters: on the embedded
stack a 50 000-sample batch is slower per sample than a 180 000-sample one. So the sizer
fits time = fixed + n x per_sample to recent batches (a least-squares fit that forgets old
batches) and aims at `target_seconds`; while the recent sizes are too alike for a fit, it
steers by the smoothed samples/second, which converges to the same point more slowly, and
so it does while the fit explains too little of the batch times (R^2 < FIT_R2): a fit of a
few noisy batches, or of batches on both sides of a change of speed, extrapolates noise
(unchecked, it swung a 20M-row upload's batches between 670k and 1.34M samples).
The change per step is bounded (x0.5 .. x2) so one slow batch (a GC pause, a busy disk)
does not swing it, except on the ramp from a small starting size: a batch that took under
a quarter of the target may grow up to x8, to what the smoothed rate says (which counts
the fixed cost per sample too, so it undershoots rather than overshoots). Corrections
inside `deadband` are skipped so the size (and the cadence users see) stays still, and the
result is kept within [min_size, max_size]. Readers cut batches at record boundaries; the
sizer only sets the target. `adaptive=False` pins every batch to the starting size.
"""

from __future__ import annotations

from dataclasses import dataclass

FIT_R2 = 0.8  # the share of the batch times' variance the fit must explain to be used


@dataclass
class BatchSizer:
    """The current target batch size; call it for the size, `observe` after a batch."""

    size: int
    adaptive: bool = True
    target_seconds: float = 0.75
    min_size: int = 1_000
    max_size: int = 2_000_000
    smoothing: float = 0.5  # weight of the newest rate measurement
    deadband: float = 0.15  # relative error of the size that is left alone
    ramp_growth: float = 8.0  # the largest step up from a batch far shorter than the target

    def __post_init__(self) -> None:
        self._rate: float | None = None
        # Forgetting sums for the fit: weight, n, t, n*n, n*t, t*t.
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        if self.adaptive:
            self.size = min(max(self.size, self.min_size), self.max_size)

    def __call__(self) -> int:
        return self.size

    @property
    def rate(self) -> float | None:
        """The smoothed samples per second of recent batches (None before a batch)."""
        return self._rate

    def observe(self, samples: int, seconds: float) -> None:
        """Feed one finished batch (samples and wall time) and adapt the next size."""
        if not self.adaptive or samples <= 0 or seconds <= 0:
            return
        rate = samples / seconds
        self._rate = rate if self._rate is None else self.smoothing * rate + (1 - self.smoothing) * self._rate
        keep = 1 - self.smoothing
        n, t = float(samples), seconds
        for i, value in enumerate((1.0, n, t, n * n, n * t, t * t)):
            self._sums[i] = keep * self._sums[i] + value
        by_rate = self._rate * self.target_seconds
        ideal = self._fitted() or by_rate
        if abs(ideal - self.size) <= self.deadband * self.size:
            return
        growth = 2.0
        if seconds < self.target_seconds / 4:
            # Still on the ramp: the rate-based size is the safe side of the two.
            ideal = min(ideal, by_rate)
            growth = self.ramp_growth
        bounded = min(max(ideal, self.size * 0.5), self.size * growth)
        self.size = int(min(max(bounded, self.min_size), self.max_size))

    def _fitted(self) -> float | None:
        """The size the fit of time = fixed + n x per_sample says takes `target_seconds`."""
        w, sn, st, snn, snt, stt = self._sums
        mean_n, mean_t = sn / w, st / w
        var_n = snn / w - mean_n * mean_n
        if var_n <= (0.1 * mean_n) ** 2:  # sizes too alike to tell fixed from per-sample cost
            return None
        cov = snt / w - mean_n * mean_t
        var_t = stt / w - mean_t * mean_t
        if cov * cov < FIT_R2 * var_n * var_t:
            return None  # the sizes explain little of the times (noise, or a change of speed)
        per_sample = cov / var_n
        fixed = mean_t - per_sample * mean_n
        if per_sample <= 0 or fixed < 0:
            return None  # noise, not a cost model: fall back to the rate
        if fixed >= self.target_seconds / 2:
            # The fixed cost alone eats the interval: make it at most half of each batch.
            return fixed / per_sample
        return (self.target_seconds - fixed) / per_sample
