"""Batch size control: checkpoints at a steady cadence whatever the file and machine.

The parser asks for a target size before each batch (`sizer()`) and reports the batch's
samples and wall time afterwards (`observe`). The size is steered toward `target_seconds`
per batch from a smoothed rate, so a fast binary format gets big batches and a slow text
format small ones. Batch time includes a fixed cost (commit, checkpoint) that does not
scale with size; steering by samples/second still converges to the target, because a too
small batch looks slow and grows. The change per step is bounded (x0.5 .. x2) so one slow
batch (a GC pause, a busy disk) does not swing it, small corrections inside `deadband`
are skipped so the batch size (and the cadence users see) stays still, and the result is
kept within [min_size, max_size]. Readers cut batches at record boundaries; the sizer only
sets the target. `adaptive=False` pins every batch to the starting size.
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def __post_init__(self) -> None:
        self._rate: float | None = None
        if self.adaptive:
            self.size = min(max(self.size, self.min_size), self.max_size)

    def __call__(self) -> int:
        return self.size

    @property
    def rate(self) -> float | None:
        """The smoothed samples per second the size is steered by (None before a batch)."""
        return self._rate

    def observe(self, samples: int, seconds: float) -> None:
        """Feed one finished batch (samples and wall time) and adapt the next size."""
        if not self.adaptive or samples <= 0 or seconds <= 0:
            return
        rate = samples / seconds
        if self._rate is None:
            self._rate = rate
        else:
            self._rate = self.smoothing * rate + (1 - self.smoothing) * self._rate
        ideal = self._rate * self.target_seconds
        if abs(ideal - self.size) <= self.deadband * self.size:
            return
        bounded = min(max(ideal, self.size * 0.5), self.size * 2.0)
        self.size = int(min(max(bounded, self.min_size), self.max_size))
