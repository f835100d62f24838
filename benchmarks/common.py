"""Shared helpers of the benchmarks: medians, result tables, the machine, embedded servers.

Every benchmark module exposes `run() -> list[Table]` (what `benchmarks.run_all` collects
into docs/benchmarks.md) and a `main()` that prints its tables alone.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psutil

RUNS = 3  # every figure is the median of this many runs (or more)
T = TypeVar("T")


@dataclass
class Table:
    """One benchmark's result: a title, column names, rows of cells and notes under it."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cells(self) -> list[list[str]]:
        """Every row formatted as text."""
        return [[_cell(v) for v in row] for row in self.rows]

    def text(self) -> str:
        """A fixed-width table for the terminal."""
        rows = [list(self.columns), *self.cells()]
        rows = [r + [""] * (len(self.columns) - len(r)) for r in rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        lines = [f"== {self.title}"]
        for n, row in enumerate(rows):
            lines.append(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"   {note}" for note in self.notes]
        return "\n".join(lines)

    def markdown(self) -> str:
        """A GitHub-flavoured markdown table with its notes."""
        head = "| " + " | ".join(self.columns) + " |"
        rule = "|" + "|".join(["---"] + ["---:"] * (len(self.columns) - 1)) + "|"
        body = ["| " + " | ".join(row) + " |" for row in self.cells()]
        notes = [f"* {note}" for note in self.notes]
        return "\n".join([f"### {self.title}", "", head, rule, *body, "", *notes]).rstrip() + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def median_of(fn: Callable[[], T], runs: int = RUNS, warmup: bool = False) -> tuple[float, T]:
    """Median wall seconds of `runs` calls of `fn` and the last result."""
    if warmup:
        fn()
    times: list[float] = []
    result: T | None = None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    assert result is not None
    return statistics.median(times), result


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mem = psutil.virtual_memory().total / 1024**3
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpus": str(os.cpu_count()),
        "cpus usable": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem:.1f} GiB",
        "processor": _cpu_model(),
        "python": platform.python_version(),
        "load average at start": load,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def show(tables: Sequence[Table]) -> list[Table]:
    """Print tables to the terminal as soon as they are measured; return them."""
    for table in tables:
        print(table.text(), flush=True)
        print(flush=True)
    return list(tables)
