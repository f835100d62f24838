"""E-mail alerts against a real SMTP server (aiosmtpd): one digest per interval, plain and STARTTLS+AUTH."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from imuflow import metrics
from imuflow.settings import Settings
from services.progress.mailer import EmailDigest
from services.progress.notifier import Alert, AlertFile
from tests.ops.smtp import SmtpServer, body, self_signed, server_context


def settings(port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": "x",
        "alert_email_to": "ops@example.org, oncall@example.org",
        "alert_email_from": "imuflow@example.org",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "alert_email_interval": 0.5,
        **overrides,
    }
    return Settings(**values)


def failed(i: int) -> Alert:
    return Alert(
        "job_failed",
        f"00000000-0000-0000-0000-{i:012d}",
        f"job {i} failed: no header row",
        {"filename": f"walk-{i}.csv", "owner": f"user{i % 3}", "reason": f"no header row in file {i}"},
    )


def count(outcome: str) -> float:
    return float(metrics.ALERT_EMAILS.labels(outcome)._value.get())


async def run_until(digest: EmailDigest, server: SmtpServer, mails: int, within: float = 20.0) -> None:
    """Run the digest until the server holds `mails` messages (bounded), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(digest.run(stop))
    deadline = asyncio.get_running_loop().time() + within
    while len(server.mailbox.snapshot()) < mails and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (another thread's mailbox)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a second mail, if one were (wrongly) on its way, would land now
    stop.set()
    await task


def test_starttls_is_on_unless_port_25_a_loopback_host_or_implicit_tls() -> None:
    def on(host: str, port: int, **kw: Any) -> bool:
        return Settings(database_url="x", smtp_host=host, smtp_port=port, **kw).smtp_use_starttls

    assert on("smtp.example.org", 587) and on("smtp.example.org", 2525)
    assert not on("smtp.example.org", 25)
    assert not on("127.0.0.1", 587) and not on("localhost", 587) and not on("::1", 587)
    assert not on("smtp.example.org", 465)
    assert Settings(database_url="x", smtp_host="smtp.example.org", smtp_port=465).smtp_implicit_tls
    assert on("127.0.0.1", 587, smtp_starttls=True) and not on("smtp.example.org", 587, smtp_starttls=False)
    with pytest.raises(ValueError, match="IMUFLOW_SMTP_HOST"):
        Settings(database_url="x", alert_email_to="ops@example.org")
    assert EmailDigest.from_settings(Settings(database_url="x")) is None


async def test_a_burst_is_one_digest_naming_every_file_id_owner_and_reason() -> None:
    with SmtpServer() as server:
        digest = EmailDigest(settings(server.port))
        sent = count("sent")
        burst = [failed(i) for i in range(60)]
        stuck = Alert(
            "jobs_stuck",
            "00000000-0000-0000-0000-00000000aaaa",
            "2 job(s) stay stuck",
            files=(
                AlertFile("00000000-0000-0000-0000-00000000aaaa", "a.csv", "alice", "parsing, no progress"),
                AlertFile("00000000-0000-0000-0000-00000000bbbb", "b.csv", "bob", "parsing, no progress"),
            ),
        )
        for alert in [*burst, stuck]:
            digest.notify(alert)
        await run_until(digest, server, 1)
    mails = server.mailbox.snapshot()
    assert len(mails) == 1 and count("sent") == sent + 1
    mail = mails[0]
    assert mail["To"] == "ops@example.org, oncall@example.org" and mail["From"] == "imuflow@example.org"
    assert mail["Subject"] == "imuflow: 62 file(s) need attention (60 failed, 1 stuck)"
    assert server.mailbox.envelopes == [("imuflow@example.org", ["ops@example.org", "oncall@example.org"])]
    text = body(mail)
    for alert in burst:
        (f,) = alert.named_files()
        assert f"id:     {f.file_id}" in text and f"file:   {f.filename}" in text
        assert f"reason: {f.reason}" in text
    assert "owner:  user2" in text and "owner:  alice" in text and "owner:  bob" in text
    assert "00000000-0000-0000-0000-00000000bbbb" in text
    assert server.mailbox.tls_sessions == 0  # loopback: plain by default


async def test_alerts_after_a_digest_wait_for_the_next_window() -> None:
    with SmtpServer() as server:
        digest = EmailDigest(settings(server.port, alert_email_interval=0.3))
        stop = asyncio.Event()
        task = asyncio.create_task(digest.run(stop))
        digest.notify(failed(1))
        digest.notify(failed(2))
        for _ in range(200):
            if server.mailbox.snapshot():
                break
            await asyncio.sleep(0.05)
        digest.notify(failed(3))
        for _ in range(200):
            if len(server.mailbox.snapshot()) == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
    first, second = server.mailbox.snapshot()
    assert "walk-1.csv" in body(first) and "walk-2.csv" in body(first) and "walk-3.csv" not in body(first)
    assert "walk-3.csv" in body(second)


async def test_a_steady_stream_of_alerts_is_one_digest_per_interval() -> None:
    interval = 0.5
    with SmtpServer() as server:
        digest = EmailDigest(settings(server.port, alert_email_interval=interval))
        stop = asyncio.Event()
        task = asyncio.create_task(digest.run(stop))
        began = asyncio.get_running_loop().time()
        for i in range(40):  # one alert every 50 ms for 2 s
            digest.notify(failed(i))
            await asyncio.sleep(0.05)
        feeding = asyncio.get_running_loop().time() - began

        def delivered() -> list[str]:
            return [line.strip() for m in server.mailbox.snapshot() for line in body(m).splitlines()]

        for _ in range(100):  # bounded: ~5 s
            if all(f"file:   walk-{i}.csv" in delivered() for i in range(40)):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
    arrived = server.mailbox.arrived
    names = [line for line in delivered() if line.startswith("file:")]
    assert sorted(names) == sorted(f"file:   walk-{i}.csv" for i in range(40))  # each alert, once
    # About 2 s of alerts at one digest per 0.5 s: a handful of mails, not 40.
    assert 2 <= len(arrived) <= feeding / interval + 2, (len(arrived), feeding)
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    assert min(gaps) >= interval * 0.95, gaps


async def test_starttls_and_auth_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with SmtpServer(tls=server_context(cert, key), users={"alerts": "s3cret"}) as server:
        good = settings(
            server.port,
            smtp_starttls=True,
            smtp_username="alerts",
            smtp_password="s3cret",
            smtp_ca_file=str(cert),
        )
        digest = EmailDigest(good)
        digest.notify(failed(7))
        await run_until(digest, server, 1)
        assert len(server.mailbox.snapshot()) == 1
        assert server.mailbox.logins == ["alerts"] and server.mailbox.tls_sessions == 1
        assert "walk-7.csv" in body(server.mailbox.snapshot()[0])

        # A wrong password: nothing is sent, the alert is kept for the next digest.
        failures = count("failed")
        wrong = EmailDigest(good.model_copy(update={"smtp_password": "nope"}))
        wrong.notify(failed(8))
        assert not await wrong.send_pending()
        assert wrong.pending == 1 and count("failed") == failures + 1

        # Without the CA the certificate is not trusted: refused, not sent in the clear.
        untrusted = EmailDigest(good.model_copy(update={"smtp_ca_file": ""}))
        untrusted.notify(failed(9))
        assert not await untrusted.send_pending()
        # Without STARTTLS the server refuses to go on (it requires TLS first).
        plain = EmailDigest(good.model_copy(update={"smtp_starttls": False}))
        plain.notify(failed(10))
        assert not await plain.send_pending()
    assert len(server.mailbox.snapshot()) == 1


async def test_a_digest_the_server_refused_goes_out_with_the_next_window(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with SmtpServer(tls=server_context(cert, key), users={"alerts": "right"}) as server:
        wrong = settings(
            server.port,
            alert_email_interval=0.2,
            smtp_starttls=True,
            smtp_ca_file=str(cert),
            smtp_username="alerts",
            smtp_password="wrong",
        )
        digest = EmailDigest(wrong)
        stop = asyncio.Event()
        task = asyncio.create_task(digest.run(stop))
        failures = count("failed")
        digest.notify(failed(1))
        for _ in range(200):  # bounded: ~10 s
            if count("failed") > failures:
                break
            await asyncio.sleep(0.05)
        assert digest.pending == 1  # kept
        digest.settings = wrong.model_copy(update={"smtp_password": "right"})  # the operator fixed it
        for _ in range(200):
            if server.mailbox.snapshot():
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task
    (mail,) = server.mailbox.snapshot()
    assert "walk-1.csv" in body(mail) and digest.pending == 0
