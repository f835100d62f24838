"""E-mail alerts (SPEC §7): the webhook's events, sent as one digest per interval.

The first alert after a quiet spell opens a window of `IMUFLOW_ALERT_EMAIL_INTERVAL`
seconds; everything that arrives in it goes out as one mail at its end, so a burst (a
broker outage failing hundreds of jobs) is one mail, not hundreds. A digest that cannot be
sent is kept and merged into the next one (bounded), and every file is named with its id,
owner and reason.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from imuflow import metrics
from imuflow.aio import wait_any
from imuflow.logs import fields
from imuflow.settings import Settings
from services.progress.notifier import Alert

log = logging.getLogger("imuflow.progress.mailer")
TITLES = {"job_failed": "failed", "job_requeued": "requeued", "jobs_stuck": "stuck"}


def compose(alerts: list[Alert], *, sender: str, recipients: list[str], omitted: int = 0) -> EmailMessage:
    """One digest mail naming every file of `alerts` (oldest first)."""
    kinds = Counter(a.kind for a in alerts)
    parts = ", ".join(f"{n} {TITLES[k]}" for k, n in sorted(kinds.items()))
    files = {f.file_id for a in alerts for f in a.named_files()}
    message = EmailMessage()
    message["Subject"] = f"imuflow: {len(files)} file(s) need attention ({parts})"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    lines = [f"imuflow alerts: {len(alerts)} event(s) for {len(files)} file(s).", ""]
    for alert in alerts:
        lines.append(f"{alert.at:%Y-%m-%d %H:%M:%S} UTC  {alert.kind}: {alert.summary}")
        for f in alert.named_files():
            lines += [
                f"    file:   {f.filename}",
                f"    id:     {f.file_id}",
                f"    owner:  {f.owner}",
                f"    reason: {f.reason}",
            ]
        lines.append("")
    if omitted:
        lines.append(f"{omitted} more alert(s) were left out (the digest was full).")
    lines.append("Details: `imuflow show ID`, `imuflow stuck`, or the operator page at /admin.")
    message.set_content("\n".join(lines))
    return message


class EmailDigest:
    """Collects alerts and mails them as one digest per interval until stopped."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_alerts: int = 500,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.recipients = settings.alert_email_recipients
        self.sender = settings.alert_email_from or f"imuflow@{socket.getfqdn()}"
        self.interval = settings.alert_email_interval
        self.max_alerts = max_alerts
        self.timeout = timeout
        self.tls_context = tls_context or self._context(settings)
        self._pending: list[Alert] = []
        self._omitted = 0
        self._arrived = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailDigest | None:
        """The configured digest, or None when IMUFLOW_ALERT_EMAIL_TO is empty."""
        return cls(settings) if settings.alert_email_recipients else None

    @staticmethod
    def _context(settings: Settings) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if settings.smtp_ca_file:
            context.load_verify_locations(settings.smtp_ca_file)
        return context

    @property
    def pending(self) -> int:
        """Alerts waiting for the next digest."""
        return len(self._pending)

    def notify(self, alert: Alert) -> None:
        """Add an alert to the next digest (never blocks; beyond the bound it is counted only)."""
        if len(self._pending) >= self.max_alerts:
            self._omitted += 1
            metrics.ALERT_EMAILS.labels("dropped").inc()
        else:
            self._pending.append(alert)
        self._arrived.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Wait for an alert, gather for one interval, send; the last digest goes out on stop."""
        while not stop.is_set():
            if not self._pending:  # alerts kept from a failed digest go out in the next window
                await wait_any(stop, self._arrived, timeout=30.0)
            if not self._pending:
                self._arrived.clear()
                continue
            await wait_any(stop, timeout=self.interval)  # the window: a burst becomes one mail
            self._arrived.clear()
            if not await self.send_pending() and not stop.is_set():
                # Keep them for the next window rather than retrying in a tight loop.
                await wait_any(stop, timeout=self.interval)
        if self._pending:
            await self.send_pending()
        if self._pending:
            log.warning(
                "stopping with %d alerts not mailed", len(self._pending), extra=fields(action="alert_lost")
            )

    async def send_pending(self) -> bool:
        """Mail everything pending as one digest; False (alerts kept) when that failed."""
        alerts, omitted = self._pending, self._omitted
        self._pending, self._omitted = [], 0
        message = compose(alerts, sender=self.sender, recipients=self.recipients, omitted=omitted)
        try:
            await self._send(message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            metrics.ALERT_EMAILS.labels("failed").inc()
            log.warning(
                "alert e-mail not sent: %s",
                exc,
                extra=fields(action="alert_email_failed", alerts=len(alerts)),
            )
            kept = (alerts + self._pending)[: self.max_alerts]
            self._omitted += omitted + len(alerts) + len(self._pending) - len(kept)
            self._pending = kept
            return False
        metrics.ALERT_EMAILS.labels("sent").inc()
        log.info(
            "alert digest mailed",
            extra=fields(action="alert_email_sent", alerts=len(alerts), to=self.recipients),
        )
        return True

    async def _send(self, message: EmailMessage) -> None:
        s = self.settings
        await aiosmtplib.send(
            message,
            sender=self.sender,
            recipients=self.recipients,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username or None,
            password=s.smtp_password or None,
            use_tls=s.smtp_implicit_tls,
            start_tls=s.smtp_use_starttls,
            tls_context=self.tls_context,
            timeout=self.timeout,
        )
