"""`imuflow trends [--days 7|30] [--per day|hour]`: throughput, outcomes and times (admin).

Reads `GET /api/admin/trends` (the SQL function behind the `streaming_trends_daily` and
`_hourly` views) as the stack's admin and prints one row per day (or per hour, the series
the operator page draws for 7 days) plus the whole period.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from imuflow.cli.client import StackClient
from imuflow.settings import Settings

if TYPE_CHECKING:  # rich is imported where a table is drawn: `imuflow upload` never needs it
    from rich.console import Console
    from rich.table import Table

COMMANDS = ("trends",)


def add_parsers(sub: Any) -> None:
    """Register `imuflow trends`."""
    trends = sub.add_parser(
        "trends", help="throughput, completions, failures by reason, queue and parse times (admin)"
    )
    trends.add_argument("--days", type=int, choices=(7, 30), default=7, help="period (default 7)")
    trends.add_argument("--per", choices=("day", "hour"), default="day", help="one row per (default day)")


def run(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """Print the trend table."""
    from rich.console import Console

    out = console or Console(width=140)
    client = StackClient(settings, admin=True, token=args.token)
    params = {"days": args.days, "bucket": args.per}
    report = client.progress("GET", "/api/admin/trends", params=params)
    out.print(table(report["points"], args.days, per=args.per))
    return 0


def table(points: list[dict[str, Any]], days: int, *, per: str = "day") -> Table:
    """One row per day or hour (newest last) and a total row."""
    from rich.table import Table

    t = Table(
        f"{per} (UTC)", "samples", "samples/s", "busy samples/s", "completed", "failed (by reason)",
        "queue wait p50", "parse p50", "parse p95",
        title=f"imuflow trends, last {days} days, per {per}",
    )  # fmt: skip
    when = "%Y-%m-%d %H:00" if per == "hour" else "%Y-%m-%d"
    for p in points:
        t.add_row(
            datetime.fromisoformat(p["bucket_start"]).strftime(when),
            f"{p['samples']:,}",
            f"{p['samples_per_second']:,.1f}",
            _num(p["samples_per_busy_second"]),
            str(p["files_completed"]),
            _failed(p["files_failed"], p["failed_by_reason"]),
            _secs(p["queue_wait_p50_seconds"]),
            _secs(p["parse_p50_seconds"]),
            _secs(p["parse_p95_seconds"]),
        )
    reasons: dict[str, int] = {}
    for p in points:
        for reason, n in p["failed_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    samples = sum(p["samples"] for p in points)
    seconds = sum(p["bucket_seconds"] for p in points) or 1
    t.add_section()
    t.add_row(
        "total",
        f"{samples:,}",
        f"{samples / seconds:,.1f}",
        "",
        str(sum(p["files_completed"] for p in points)),
        _failed(sum(p["files_failed"] for p in points), reasons),
        "", "", "",
    )  # fmt: skip
    return t


def _failed(n: int, by_reason: dict[str, int]) -> str:
    if not n:
        return "0"
    return f"{n} (" + ", ".join(f"{r} {c}" for r, c in sorted(by_reason.items())) + ")"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"
