"""A live terminal progress bar fed by a file's SSE stream."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from imuflow.cli.client import StackClient

TERMINAL = {"completed", "failed", "cancelled"}


def describe(record: dict[str, Any]) -> str:
    """One line about a file's state."""
    done = record.get("samples_processed") or 0
    total = record.get("sample_count")
    exact = record.get("sample_count_exact")
    total_text = f"{total:,}" if total is not None else "?"
    if total is not None and not exact:
        total_text = f"~{total_text}"
    rate = record.get("samples_per_second")
    eta = record.get("eta_seconds")
    parts = [f"{done:,}/{total_text} samples"]
    if rate:
        parts.append(f"{rate:,.0f}/s")
    if eta is not None and record.get("status") == "parsing":
        parts.append(f"ETA {eta:,.0f}s")
    return " · ".join(parts)


def watch(client: StackClient, file_id: str, console: Console) -> dict[str, Any]:
    """Follow the file until it ends (reconnecting with Last-Event-ID); return its record."""
    last_id: str | None = None
    record: dict[str, Any] = {}
    columns = (
        TextColumn("{task.fields[status]:>9}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("waiting", total=100, status="queued")
        while True:
            try:
                for _event, event_id, record in client.events(file_id, last_id):
                    last_id = event_id or last_id
                    bar.update(
                        task,
                        completed=record.get("percent", 0),
                        description=describe(record),
                        status=record["status"],
                    )
                    if record["status"] in TERMINAL:
                        return record
            except httpx.HTTPError:
                time.sleep(1.0)  # the stream dropped: reconnect and replay what was missed
