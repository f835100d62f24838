"""Alerts from the app: a webhook told about stuck-job actions, stuck jobs and failed jobs.

`IMUFLOW_ALERT_WEBHOOK_URL` (empty = off) receives a generic JSON body, or with
`IMUFLOW_ALERT_WEBHOOK_FORMAT=slack` a Slack-compatible `{"text": ...}` body. Alerts wait in
a bounded queue (the oldest is dropped, and counted, when a dead webhook lets it fill) and
are posted with retries, so a slow receiver never slows the watchdog down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from imuflow import metrics, retrying
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings

log = logging.getLogger("imuflow.progress.notifier")
AlertKind = Literal["job_requeued", "job_failed", "jobs_stuck"]
ICONS = {"job_requeued": ":warning:", "job_failed": ":x:", "jobs_stuck": ":rotating_light:"}


@dataclass(frozen=True)
class AlertFile:
    """A file an alert is about: what an operator needs to find it and act."""

    file_id: str
    filename: str
    owner: str
    reason: str


@dataclass(frozen=True)
class Alert:
    """One thing an operator should hear about (`jobs_stuck`: several files at once)."""

    kind: AlertKind
    file_id: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    files: tuple[AlertFile, ...] = ()

    def named_files(self) -> tuple[AlertFile, ...]:
        """Every file the alert names (one for the per-job kinds)."""
        if self.files:
            return self.files
        d = self.details
        return (
            AlertFile(
                self.file_id,
                str(d.get("filename") or "?"),
                str(d.get("owner") or "?"),
                str(d.get("reason") or self.summary),
            ),
        )


def render(alert: Alert, fmt: Literal["json", "slack"]) -> dict[str, Any]:
    """The webhook body of an alert in the configured format."""
    if fmt == "slack":
        return {"text": f"{ICONS[alert.kind]} imuflow: {alert.summary}"}
    return {
        "source": "imuflow",
        "kind": alert.kind,
        "file_id": alert.file_id,
        "summary": alert.summary,
        "at": alert.at.isoformat(),
        **alert.details,
        "files": [asdict(f) for f in alert.named_files()],
    }


class Notifier:
    """Posts queued alerts to the webhook until stopped."""

    def __init__(
        self,
        url: str,
        fmt: Literal["json", "slack"] = "json",
        *,
        max_queue: int = 100,
        retries: int = 3,
        backoff: float = 0.5,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.fmt = fmt
        self.max_queue = max_queue
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self._queue: deque[Alert] = deque()
        self._ready = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Notifier | None:
        """The configured notifier, or None when no webhook is set."""
        if not settings.alert_webhook_url:
            return None
        return cls(settings.alert_webhook_url, settings.alert_webhook_format)

    @property
    def pending(self) -> int:
        """Alerts waiting to be posted."""
        return len(self._queue)

    def notify(self, alert: Alert) -> None:
        """Queue an alert (never blocks; beyond the bound the oldest is dropped)."""
        if len(self._queue) >= self.max_queue:
            dropped = self._queue.popleft()
            metrics.ALERT_NOTIFICATIONS.labels("dropped").inc()
            log.warning(
                "alert queue full; dropping the oldest alert",
                extra=fields(action="alert_dropped", file_id=dropped.file_id),
            )
        self._queue.append(alert)
        self._ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Post alerts as they come until `stop` is set."""
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while not stop.is_set():
                while self._queue and not stop.is_set():
                    await self._deliver(client, self._queue.popleft(), stop)
                self._ready.clear()
                await wait_any(stop, self._ready, timeout=30.0)
        if self._queue:
            log.warning(
                "stopping with %d alerts not sent", len(self._queue), extra=fields(action="alert_lost")
            )

    async def _deliver(self, client: httpx.AsyncClient, alert: Alert, stop: asyncio.Event) -> bool:
        body = render(alert, self.fmt)
        policy = retrying.bounded(
            "alert webhook",
            transient=retrying.of_type(WebhookBusy),
            attempts=self.retries + 1,
            initial=self.backoff,
            maximum=30.0,
            stop=stop,
        )
        try:
            await policy(self._post, client, body)
        except (WebhookError, retrying.Stopped) as exc:
            log.warning(
                "alert webhook: %s",
                exc or "stopping",
                extra=fields(action="alert_failed", file_id=alert.file_id),
            )
            metrics.ALERT_NOTIFICATIONS.labels("failed").inc()
            return False
        metrics.ALERT_NOTIFICATIONS.labels("sent").inc()
        return True

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> None:
        try:
            response = await client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise WebhookBusy(f"cannot reach the webhook: {exc!r}") from exc
        if response.status_code < 300:
            return
        if response.status_code in (408, 429) or response.status_code >= 500:
            raise WebhookBusy(f"webhook answered {response.status_code}")
        # Any other 4xx will not get better by retrying (bad URL, bad body, no permission).
        raise WebhookError(f"refused by the webhook ({response.status_code}): {response.text[:200]}")


class WebhookError(Exception):
    """The webhook did not take the alert."""


class WebhookBusy(WebhookError):
    """The webhook is away or overloaded: worth another attempt."""
