"""The stuck-job watchdog: every few seconds, apply the one stuck rule (SPEC §6).

Each progress replica runs one; per round only the replica that wins a transaction-scoped
advisory lock calls `reset_stuck_streaming_processes(NULL)` (requeue through the outbox,
or fail once the attempts are spent) and reads new failures for the alert webhook. Every
replica keeps `imuflow_stuck_jobs` = the jobs still stuck after that, so the gauge stays
at 0 while recovery works and an alert on it means recovery itself is failing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from imuflow import metrics
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.supervision import TaskSupervisor
from services.progress.notifier import Alert, Notifier
from services.progress.operations import OperationsRepository, WatchdogRound
from services.progress.repository import Unavailable

log = logging.getLogger("imuflow.progress.watchdog")


def interval_for(stuck_after: float) -> float:
    """Seconds between rounds: a tenth of STUCK_AFTER, between 1 and 15 s."""
    return min(max(stuck_after / 10.0, 1.0), 15.0)


def report_actions(actions: Iterable[dict[str, Any]], notifier: Notifier | None, *, source: str) -> None:
    """Log and count what a reset did; alert on requeues (failures alert from file_events)."""
    for row in actions:
        file_id, action = str(row["file_id"]), row["action"]
        log.warning(
            "stuck job %s: %s",
            action,
            row["reason"],
            extra=fields(action=f"stuck_{action}", file_id=file_id, attempts=row["attempts"], source=source),
        )
        metrics.WATCHDOG_ACTIONS.labels(action).inc()
        if action == "failed":
            metrics.PARSE_FAILURES.labels("stuck").inc()
        elif notifier is not None:
            notifier.notify(
                Alert(
                    "job_requeued",
                    file_id,
                    f"stuck job {file_id} requeued (attempt {row['attempts']}): {row['reason']}",
                    {"action": action, "attempts": row["attempts"], "reason": row["reason"], "by": source},
                )
            )


def failed_alert(row: dict[str, Any]) -> Alert:
    """The alert for one `failed` file event."""
    data = row["data"]
    file_id = str(row["file_id"])
    message = data.get("error_message") or "no reason recorded"
    owner = row.get("owner") or "?"
    return Alert(
        "job_failed",
        file_id,
        f"job {file_id} ({data.get('filename')}, owner {owner}) failed: {message}",
        {
            "filename": data.get("filename"),
            "owner": owner,
            "reason": message,
            "attempts": data.get("attempts"),
            "samples_processed": data.get("samples_processed"),
        },
    )


class Watchdog:
    """Runs watchdog rounds until stopped."""

    def __init__(self, settings: Settings, ops: OperationsRepository, notifier: Notifier | None) -> None:
        self.settings = settings
        self.ops = ops
        self.notifier = notifier
        self.interval = interval_for(settings.stuck_after)
        self._configured = False

    async def run(self, stop: asyncio.Event) -> None:
        """A round every `interval` seconds; a database outage only skips rounds."""
        log.info("stuck-job watchdog every %.1fs", self.interval, extra=fields(action="watchdog_start"))
        while not stop.is_set():
            try:
                await self.round()
            except Unavailable as exc:
                log.warning("watchdog round skipped: %s", exc, extra=fields(action="watchdog_skip"))
            await wait_any(stop, timeout=self.interval)

    async def round(self) -> WatchdogRound:
        """One round: reset what is stuck (if this replica holds the lock), update the gauge."""
        if not self._configured:
            # The SQL rule reads these; written here so a restart with new settings applies.
            await self.ops.write_config(self.settings.stuck_after, self.settings.max_attempts)
            self._configured = True
        result = await self.ops.watchdog_round(collect_failed=self.notifier is not None)
        if result.acted:
            report_actions(result.actions, self.notifier, source="watchdog")
            if self.notifier is not None:
                for row in result.failed:
                    self.notifier.notify(failed_alert(row))
        metrics.STUCK_JOBS.set(await self.ops.count_stuck())
        return result


def start_watchdog(state: Any, settings: Settings, pool: asyncpg.Pool, supervisor: TaskSupervisor) -> None:
    """Put the operations repository and notifier on the app state; start their tasks."""
    state.ops = OperationsRepository(pool)
    state.notifier = Notifier.from_settings(settings)
    supervisor.start("stuck-watchdog", Watchdog(settings, state.ops, state.notifier).run)
    if state.notifier is not None:
        supervisor.start("alert-notifier", state.notifier.run)
