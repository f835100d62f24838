"""Batch size control: checkpoints at a steady cadence whatever the file and machine.

The size is steered toward `target_seconds` per batch from the measured rate, with
the change per step bounded (x0.5 .. x2) so one slow batch (a GC pause, a busy disk)
does not swing it, and the result kept within [min_size, max_size].
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

    def __post_init__(self) -> None:
        self._rate: float | None = None
        if self.adaptive:
            self.size = min(max(self.size, self.min_size), self.max_size)

    def __call__(self) -> int:
        return self.size

    def observe(self, samples: int, seconds: float) -> None:
        """Feed one finished batch (samples and wall time) and adapt the next size."""
        if not self.adaptive or samples <= 0 or seconds <= 0:
            return
        rate = samples / seconds
        self._rate = (
            rate if self._rate is None else (self.smoothing * rate + (1 - self.smoothing) * self._rate)
        )
        ideal = self._rate * self.target_seconds
        bounded = min(max(ideal, self.size * 0.5), self.size * 2.0)
        self.size = int(min(max(bounded, self.min_size), self.max_size))
