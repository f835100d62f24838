"""The stuck-job watchdog: every few seconds, apply the one stuck rule (SPEC §6).

Each progress replica runs one; per round only the replica that wins a transaction-scoped
advisory lock calls `reset_stuck_streaming_processes(NULL)` (requeue through the outbox,
or fail once the attempts are spent) and reads new failures for the alerts. Every replica
keeps `imuflow_stuck_jobs` = the jobs still stuck after that, so the gauge stays at 0 while
recovery works and an alert on it means recovery itself is failing, and
`imuflow_slowing_jobs` = the early warning's count. A job the lock holder finds still stuck
after its reset in two rounds in a row (its row is locked by a hung parser, say) is named
in a `jobs_stuck` alert, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import asyncpg

from imuflow import metrics, sentry
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.supervision import TaskSupervisor
from services.progress.alerts import Alerts, AlertSink
from services.progress.notifier import Alert, AlertFile
from services.progress.operations import OperationsRepository, WatchdogRound
from services.progress.repository import Unavailable

log = logging.getLogger("imuflow.progress.watchdog")


def interval_for(stuck_after: float) -> float:
    """Seconds between rounds: a tenth of STUCK_AFTER, between 1 and 15 s."""
    return min(max(stuck_after / 10.0, 1.0), 15.0)


def report_actions(actions: Iterable[dict[str, Any]], notifier: AlertSink | None, *, source: str) -> None:
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
            sentry.capture_job_failure("stuck", row["reason"], file_id)
        elif notifier is not None:
            owner = row.get("owner") or "?"
            notifier.notify(
                Alert(
                    "job_requeued",
                    file_id,
                    f"stuck job {file_id} ({row.get('filename')}, owner {owner}) requeued "
                    f"(attempt {row['attempts']}): {row['reason']}",
                    {
                        "action": action,
                        "attempts": row["attempts"],
                        "reason": row["reason"],
                        "by": source,
                        "filename": row.get("filename"),
                        "owner": owner,
                    },
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


def stuck_alert(rows: list[dict[str, Any]]) -> Alert:
    """The `jobs_stuck` alert naming every job that stays stuck although it was reset."""
    files = tuple(
        AlertFile(
            str(r["file_id"]),
            r["filename"],
            r["owner"],
            f"{r['status']}, no progress for {r['stuck_for_seconds']:.0f} s "
            f"(limit {r['limit_seconds']:.0f} s); the watchdog's reset did not take "
            "(row locked by a hung parser?)",
        )
        for r in rows
    )
    return Alert(
        "jobs_stuck",
        files[0].file_id,
        f"{len(files)} job(s) stay stuck although the watchdog resets them: "
        + ", ".join(f"{f.filename} ({f.file_id})" for f in files),
        {"count": len(files)},
        files=files,
    )


class Watchdog:
    """Runs watchdog rounds until stopped."""

    def __init__(self, settings: Settings, ops: OperationsRepository, notifier: AlertSink | None) -> None:
        self.settings = settings
        self.ops = ops
        self.notifier = notifier
        self.interval = interval_for(settings.stuck_after)
        self._configured = False
        self._still_stuck: set[str] = set()  # still stuck after the previous round's reset
        self._alerted: set[str] = set()  # named in a jobs_stuck alert and still stuck

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
        """One round: reset what is stuck (if this replica holds the lock), update the gauges."""
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
        stuck = await self.ops.stuck(None)
        metrics.STUCK_JOBS.set(len(stuck))
        if result.acted:
            self._alert_lasting(stuck)
        metrics.SLOWING_JOBS.set(len(await self.ops.slowing()))
        return result

    def _alert_lasting(self, stuck: list[dict[str, Any]]) -> None:
        now = {str(r["file_id"]) for r in stuck}
        lasting = [r for r in stuck if str(r["file_id"]) in self._still_stuck - self._alerted]
        self._still_stuck = now
        self._alerted &= now
        if lasting and self.notifier is not None:
            self.notifier.notify(stuck_alert(lasting))
            self._alerted |= {str(r["file_id"]) for r in lasting}


def start_watchdog(state: Any, settings: Settings, pool: asyncpg.Pool, supervisor: TaskSupervisor) -> None:
    """Put the operations repository and alert channels on the app state; start their tasks."""
    state.ops = OperationsRepository(pool)
    state.notifier = Alerts.from_settings(settings)
    supervisor.start("stuck-watchdog", Watchdog(settings, state.ops, state.notifier).run)
    if state.notifier is not None:
        state.notifier.start(supervisor)
