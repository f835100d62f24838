"""Every alert channel behind one `notify`: the webhook and the e-mail digest (SPEC §7)."""

from __future__ import annotations

from typing import Protocol

from imuflow.settings import Settings
from imuflow.supervision import TaskSupervisor
from services.progress.mailer import EmailDigest
from services.progress.notifier import Alert, Notifier


class AlertSink(Protocol):
    """Anything that takes alerts without blocking."""

    def notify(self, alert: Alert) -> None: ...


class Alerts:
    """The configured channels; each queues on its own, so one slow channel delays no other."""

    def __init__(self, webhook: Notifier | None, email: EmailDigest | None) -> None:
        self.webhook = webhook
        self.email = email

    @classmethod
    def from_settings(cls, settings: Settings) -> Alerts | None:
        """The channels the settings turn on, or None when there are none."""
        webhook, email = Notifier.from_settings(settings), EmailDigest.from_settings(settings)
        return cls(webhook, email) if webhook or email else None

    def notify(self, alert: Alert) -> None:
        """Hand the alert to every channel."""
        for sink in (self.webhook, self.email):
            if sink is not None:
                sink.notify(alert)

    def start(self, supervisor: TaskSupervisor) -> None:
        """Run each channel's sender as a supervised task."""
        if self.webhook is not None:
            supervisor.start("alert-notifier", self.webhook.run)
        if self.email is not None:
            supervisor.start("alert-mailer", self.email.run)
