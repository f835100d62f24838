"""Operator commands: `imuflow status`, `stuck`, `reset-stuck`, `dead-letters [--replay ID]`.

They call the operator API as the stack's admin (IMUFLOW_ADMIN_TOKEN from stack.env)
unless `--token` names another admin token.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from imuflow.cli.client import StackClient
from imuflow.settings import Settings

if TYPE_CHECKING:  # rich is imported where a table is drawn: `imuflow upload` never needs it
    from rich.console import Console
    from rich.table import Table

COMMANDS = ("status", "stuck", "reset-stuck", "dead-letters")
STATUSES = ("uploaded", "queued", "parsing", "completed", "failed", "cancelled")


def add_parsers(sub: Any) -> None:
    """Register the operator commands on the CLI's subparsers."""
    status = sub.add_parser("status", help="files by status and the jobs in flight (admin)")
    status.add_argument("--limit", type=int, default=50, help="in-flight jobs to list")
    stuck = sub.add_parser("stuck", help="jobs the stuck rule matches now (admin)")
    stuck.add_argument("--older-than", type=float, metavar="SECONDS", help="instead of IMUFLOW_STUCK_AFTER")
    reset = sub.add_parser("reset-stuck", help="requeue stuck jobs, or fail those out of attempts (admin)")
    reset.add_argument("--older-than", type=float, metavar="SECONDS", help="instead of IMUFLOW_STUCK_AFTER")
    dead = sub.add_parser("dead-letters", help="outbox rows that could not be published (admin)")
    dead.add_argument("--replay", type=int, metavar="ID", help="publish this dead letter again")
    dead.add_argument("--limit", type=int, default=100, help="dead letters to list")


def run(args: argparse.Namespace, settings: Settings, console: Console | None = None) -> int:
    """Run one operator command; tables go to stdout."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console()
    client = StackClient(settings, admin=True, token=args.token)
    if args.command == "status":
        return _status(client, out, args.limit)
    if args.command == "dead-letters":
        return _dead_letters(client, out, args.replay, args.limit)
    params = {"older_than_seconds": args.older_than} if args.older_than else {}
    if args.command == "stuck":
        rows = client.progress("GET", "/api/admin/stuck", params=params)["items"]
        if not rows:
            out.print("no stuck jobs")
            return 0
        out.print(_stuck_table(rows))
        return 0
    result = client.progress("POST", "/api/admin/stuck/reset", json=params)["items"]
    if not result:
        out.print("nothing was stuck")
        return 0
    table = Table("file", "action", "attempts", "reason", title="reset stuck jobs")
    for row in result:
        style = "red" if row["action"] == "failed" else "yellow"
        table.add_row(
            row["file_id"], f"[{style}]{row['action']}[/{style}]", str(row["attempts"]), row["reason"]
        )
    out.print(table)
    return 0


def _status(client: StackClient, out: Console, limit: int) -> int:
    from rich.table import Table

    listing = client.progress("GET", "/api/admin/jobs", params={"limit": 2000})
    counts = listing["counts"]
    summary = Table(*STATUSES, title="files by status")
    summary.add_row(*(str(counts.get(s, 0)) for s in STATUSES))
    out.print(summary)
    dead = client.progress("GET", "/api/admin/dead-letters", params={"limit": 1})["total"]
    if dead:
        note = "events that could not be published; see `imuflow dead-letters`"
        out.print(f"[red]{dead} dead letter(s)[/red]: {note}")
    flying = [j for j in listing["items"] if j["status"] in ("uploaded", "queued", "parsing")][:limit]
    if not flying:
        out.print("no jobs in flight")
        return 0
    table = Table("file", "owner", "name", "status", "progress", "samples", "rate", "eta", "health")
    for job in flying:
        total = f" / {job['sample_count']:,}" if job["sample_count"] else ""
        rate = f"{job['samples_per_second']:,.0f}/s" if job["samples_per_second"] else "-"
        eta = f"{job['eta_seconds']:.0f} s" if job["eta_seconds"] is not None else "-"
        table.add_row(
            job["id"],
            job["owner"],
            job["filename"],
            job["status"],
            f"{job['percent']:5.1f} %",
            f"{job['samples_processed']:,}{total}",
            rate,
            eta,
            _health(job),
        )
    out.print(table)
    slowing = [j for j in flying if j.get("is_slowing")]
    if slowing:
        out.print(
            f"[yellow]{len(slowing)} job(s) slowing[/yellow] (5 batches in a row below a third of their "
            "median rate; the stuck rule has not fired): " + ", ".join(j["id"] for j in slowing)
        )
    return 0


def _health(job: dict[str, Any]) -> str:
    """`stuck` (the stuck rule matches), `slowing` (the early warning), or nothing."""
    if job["is_stuck"]:
        return "[red]stuck[/red]"
    return "[yellow]slowing[/yellow]" if job.get("is_slowing") else ""


def _stuck_table(rows: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(
        "file", "owner", "name", "status", "stuck for", "limit", "attempts", "resume at", title="stuck"
    )
    for row in rows:
        table.add_row(
            row["file_id"],
            row["owner"],
            row["filename"],
            row["status"],
            f"{row['stuck_for_seconds']:.0f} s",
            f"{row['limit_seconds']:.0f} s",
            f"{row['attempts_used']} of {row['max_attempts']}",
            f"{row['resume_samples']:,} samples",
        )
    return table


def _dead_letters(client: StackClient, out: Console, replay: int | None, limit: int) -> int:
    from rich.table import Table

    if replay is not None:
        result = client.progress("POST", f"/api/admin/dead-letters/{replay}/replay")
        again = f"; file {result['requeued_file']} is queued again" if result["requeued_file"] else ""
        out.print(f"dead letter {result['id']} replayed: it is pending in the outbox again{again}")
        return 0
    listing = client.progress("GET", "/api/admin/dead-letters", params={"limit": limit})
    rows = listing["items"]
    if not rows:
        out.print("no dead letters")
        return 0
    table = Table(
        "id",
        "topic",
        "type",
        "key",
        "bytes",
        "dead since",
        "replays",
        "error",
        title=f"dead letters ({listing['total']} in all)",
    )
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["topic"],
            row["type"] or "-",
            row["key"],
            f"{row['payload_bytes']:,}",
            row["dead_at"],
            str(row["replays"]),
            row["error"] or "",
        )
    out.print(table)
    return 0
