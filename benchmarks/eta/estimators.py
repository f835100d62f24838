"""The ETA estimators compared by the harness, each fed (time, bytes done) after every batch.

* naive: the seed's overall average, done / elapsed since the job started.
* tqdm: tqdm's `EMA` (smoothing 0.3, bias-corrected) of the progress step `dn` and of the
  time step `dt`, rate = EMA(dn) / EMA(dt), as `tqdm.update` and `format_dict` do
  (tqdm is not a dependency, so its few lines are restated here).
* rich: rich's own `Progress` with a simulated clock (`get_time`), default
  `speed_estimate_period=30`: the average over samples of the last 30 s, no ETA when fewer
  than two samples fall in the window, the ETA rounded up to whole seconds.
* ours: services/progress/eta.py, exactly as the progress service runs it.
"""

from __future__ import annotations

from typing import Any, Protocol

from rich.progress import Progress, TaskID

from services.progress import eta


class Estimator(Protocol):
    """Gets every batch; says the ETA in seconds (None: no estimate)."""

    def observe(
        self, t: float, batch_seconds: float, samples: int, total_samples: int, done: int
    ) -> float | None:
        """Fold the batch completed at `t` (seconds since the job started)."""
        ...

    def live(self, now: float) -> float | None:
        """The ETA shown at `now`, between batches."""
        ...


class _Countdown:
    """Shown between batches: the last ETA minus the time since (what a page would display)."""

    last_t = 0.0
    last_eta: float | None = None

    def live(self, now: float) -> float | None:
        """The last estimate counted down to `now`."""
        return None if self.last_eta is None else max(self.last_eta - (now - self.last_t), 0.0)

    def _keep(self, t: float, value: float | None) -> float | None:
        self.last_t, self.last_eta = t, value
        return value


class Naive(_Countdown):
    """Bytes done over time since the start (the seed)."""

    def __init__(self, total: int) -> None:
        self.total = total

    def observe(
        self, t: float, batch_seconds: float, samples: int, total_samples: int, done: int
    ) -> float | None:
        """Overall average rate."""
        return self._keep(t, (self.total - done) / (done / t) if done and t > 0 else None)


class _TqdmEMA:
    """tqdm.std.EMA: exponential moving average with bias correction."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.alpha = smoothing
        self.last = 0.0
        self.calls = 0

    def __call__(self, x: float | None = None) -> float:
        beta = 1 - self.alpha
        if x is not None:
            self.last = self.alpha * x + beta * self.last
            self.calls += 1
        return self.last / (1 - beta**self.calls) if self.calls else self.last


class Tqdm(_Countdown):
    """tqdm's smoothed rate: EMA of steps over EMA of step times."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ema_dn = _TqdmEMA()
        self.ema_dt = _TqdmEMA()
        self.last_print_n = 0
        self.last_print_t = 0.0  # tqdm starts its clock when the bar is created

    def observe(
        self, t: float, batch_seconds: float, samples: int, total_samples: int, done: int
    ) -> float | None:
        """`tqdm.update(dn)`: one refresh per batch (batches are far above mininterval=0.1 s)."""
        dn, dt = done - self.last_print_n, t - self.last_print_t
        if dt and dn:
            self.ema_dn(dn)
            self.ema_dt(dt)
        self.last_print_n, self.last_print_t = done, t
        rate = self.ema_dn() / self.ema_dt() if self.ema_dt() else None
        return self._keep(t, (self.total - done) / rate if rate else None)


class Rich(_Countdown):
    """rich.progress with a simulated clock and its default 30 s speed window."""

    def __init__(self, total: int) -> None:
        self.now = 0.0
        self.progress = Progress(get_time=lambda: self.now, disable=True)
        self.task: TaskID = self.progress.add_task("parse", total=total)

    def observe(
        self, t: float, batch_seconds: float, samples: int, total_samples: int, done: int
    ) -> float | None:
        """`progress.update(completed=done)` at time `t`, then read `time_remaining`."""
        self.now = t
        self.progress.update(self.task, completed=done)
        return self._keep(t, self.progress.tasks[0].time_remaining)


class Ours:
    """services/progress/eta.py."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.state: dict[str, Any] = {}
        self.last: eta.Estimate | None = None

    def observe(
        self, t: float, batch_seconds: float, samples: int, total_samples: int, done: int
    ) -> float | None:
        """One BatchProgress event applied."""
        self.last = eta.update(
            self.state,
            completed_at=t,
            batch_seconds=batch_seconds,
            samples_in_batch=samples,
            total_samples=total_samples,
            bytes_processed=done,
            bytes_total=self.total,
        )
        self.state = self.last.state
        return self.last.eta_seconds

    def live(self, now: float) -> float | None:
        """`eta.at`: counts down, grows when a batch is overdue."""
        return eta.at(self.state, now).eta_seconds

    def range(self) -> tuple[float, float] | None:
        """The last (low, high) range."""
        if self.last is None or self.last.eta_low_seconds is None or self.last.eta_high_seconds is None:
            return None
        return self.last.eta_low_seconds, self.last.eta_high_seconds


ESTIMATORS: dict[str, type[Naive] | type[Tqdm] | type[Rich] | type[Ours]] = {
    "naive (seed)": Naive,
    "tqdm EMA 0.3": Tqdm,
    "rich 30 s window": Rich,
    "ours": Ours,
}
