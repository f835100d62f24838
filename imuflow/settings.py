"""Settings shared by every imuflow process (environment, prefix `IMUFLOW_`).

Each service builds one `Settings` at startup (never at import) and passes it down.
Defaults serve the embedded stack; `DATA_DIR/stack.env` written by `imuflow up` is
read too, so `imuflow --data-dir DIR <command>` reaches that stack with no other
configuration. Real environment variables always win over the file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class Settings(BaseSettings):
    """Every `IMUFLOW_*` setting of SPEC §4, validated at startup."""

    model_config = SettingsConfigDict(env_prefix="IMUFLOW_", extra="ignore", populate_by_name=True)

    data_dir: Path = Path("./.imuflow")
    database_url: str = ""
    kafka_bootstrap_servers: str = ""
    ingest_port: int = Field(8001, ge=0, le=65535)
    progress_port: int = Field(8000, ge=0, le=65535)
    parser_metrics_port: int = Field(8002, ge=0, le=65535)
    # The broker `imuflow up` embeds when KAFKA_BOOTSTRAP_SERVERS is empty: this port if
    # free, else any free one (0: any free one).
    embedded_broker_port: int = Field(9092, ge=0, le=65535)
    host: str = "127.0.0.1"
    batch_size: int = Field(50_000, ge=1, le=5_000_000)
    adaptive_batching: bool = True
    max_upload_bytes: int = Field(4 * GIB, ge=1)
    # Limits and fairness (SPEC §7): a container's members may inflate at most this much
    # (their uncompressed content also counts against MAX_UPLOAD_BYTES), and a reader that
    # consumed this much input without one sample fails the job.
    max_inflate_ratio: float = Field(100.0, ge=1)
    max_bytes_without_sample: int = Field(64 * 1024**2, ge=1)
    # Per-user upload limits (429 with Retry-After beyond them); generous by default.
    upload_rate_per_minute: float = Field(600.0, gt=0)
    upload_burst: int = Field(200, ge=1)
    max_concurrent_uploads: int = Field(8, ge=1)
    # Resumable (tus) uploads, SPEC §7: unfinished ones per user, and seconds of silence
    # after which an unfinished one expires and is removed from storage.
    max_pending_uploads: int = Field(20, ge=1)
    upload_expiry: float = Field(86_400.0, gt=0)
    # Processing overlaps the upload (docs/architecture.md): a `POST /api/files` body (its
    # Content-Length) or a resumable upload (its Upload-Length) at least this large is
    # recorded and queued at its first bytes, and parsed while it streams (local disk; on
    # S3 a POST body through segments, a resumable upload after its last byte; 0 = never).
    overlap_min_bytes: int = Field(16 * 1024**2, ge=0)
    # A parse that overlaps an upload gives the job back (queued, no attempt counted) after
    # this many seconds without a new byte; the next bytes ingest stores queue it again, so
    # a paused upload (a client offline) holds no parser slot.
    upload_pause_yield: float = Field(10.0, gt=0)
    stuck_after: float = Field(300.0, gt=0)
    # The longest the progress service's apply transaction may hold files' row locks
    # (seconds); applying a poll takes milliseconds.
    progress_hold_timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    # Where uploads live (SPEC §7): file:///absolute/path (default DATA_DIR/uploads) or
    # s3://bucket[/prefix]; credentials are the standard AWS_* variables (else botocore's chain);
    # IMUFLOW_S3_* names are what `imuflow up` hands its children (they win over AWS_*).
    storage_url: str = ""
    s3_endpoint_url: str = ""  # empty = AWS
    s3_region: str = "us-east-1"
    s3_access_key_id: str = Field(
        "", repr=False, validation_alias=AliasChoices("IMUFLOW_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: str = Field(
        "", repr=False, validation_alias=AliasChoices("IMUFLOW_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    # Alerts from the app (stuck-job actions, failed jobs): a webhook, off when empty.
    alert_webhook_url: str = ""
    alert_webhook_format: Literal["json", "slack"] = "json"
    # The same alerts by e-mail (SPEC §7), one digest per interval; off while no recipient.
    alert_email_to: str = ""  # comma-separated
    alert_email_from: str = ""  # empty = imuflow@<this host>
    alert_email_interval: float = Field(60.0, gt=0)
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: str = ""  # "" (auto) = true unless port 25 or a loopback host; true/false
    smtp_ca_file: str = ""  # extra CA bundle for a private SMTP server's certificate
    # Error tracking: unexpected errors of every service go to this Sentry DSN (empty = off).
    sentry_dsn: str = ""
    sentry_environment: str = "production"

    # Where the page (progress service) and the CLI reach ingest; also the CORS origin list.
    ingest_url: str = ""
    progress_url: str = ""
    cors_origins: str = ""  # comma-separated; empty = the progress URL only
    # Every progress replica's URL (comma-separated, written by `imuflow up`); each is a page origin.
    progress_urls: str = ""
    # Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-Proto/-For are believed:
    # they decide whether the session cookie is `Secure`. Empty = believe nobody.
    trusted_proxies: str = ""
    # What the CLI authenticates with (written to stack.env by `imuflow up`).
    token: str = ""
    admin_token: str = ""

    # Kafka tuning, kept here so Apache Kafka and the embedded broker share one code path.
    kafka_topic_partitions: int = Field(8, ge=1)
    kafka_replication_factor: int = Field(1, ge=1)
    # Tansu answers a waiting fetch only when this expires, so it bounds browser latency.
    kafka_fetch_max_wait_ms: int = Field(10, ge=0)
    # The parser's job consumer: a job may start up to this much later, and an idle parser
    # (with the broker answering it) no longer polls 100 times a second (docs/architecture.md).
    kafka_job_fetch_max_wait_ms: int = Field(100, ge=0)
    kafka_session_timeout_ms: int = Field(6_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(1_000, ge=100)
    kafka_max_poll_interval_ms: int = Field(300_000, ge=10_000)
    kafka_rebalance_timeout_ms: int = Field(10_000, ge=1_000)
    # Largest event the relays send (key + value + record overhead), below the broker's
    # limit (Kafka's and Tansu's default message.max.bytes is 1 MiB); a larger one is a
    # dead letter instead of a batch the broker rejects for ever.
    kafka_max_message_bytes: int = Field(1_000_000, ge=4_096)
    # Prefix of every topic name, so several stacks (or test runs) can share one cluster.
    kafka_topic_prefix: str = "imuflow."
    parser_group_id: str = "imuflow-parser"
    progress_group_id: str = "imuflow-progress"
    parser_concurrency: int = Field(2, ge=1)  # files one parser process works on at once
    # Fair share (SPEC §7): after this many seconds a job yields its parser at a batch
    # boundary when another user with fewer running jobs has work waiting. 0 = off.
    fair_share_slice: float = Field(10.0, ge=0)
    # Seconds a service has, once asked to stop, for its in-flight work: a parser job to reach
    # a batch boundary (also when a rebalance takes its partition), a request to finish.
    # Its tasks then get imuflow.supervision.CLOSE_SECONDS more; `imuflow up` kills it after
    # supervision.kill_after (this plus twice that).
    stop_grace: float = Field(10.0, gt=0)

    log_level: str = "INFO"
    sse_ping_seconds: float = Field(15.0, gt=0)
    # Per-user limits of the progress service (429 with Retry-After beyond them). SSE streams
    # count together across /api/events, /api/files/{id}/events and /api/admin/events.
    max_concurrent_exports: int = Field(4, ge=1)
    max_streams_per_user: int = Field(50, ge=1)
    # Newest file events each progress process keeps in memory to replay reconnects without
    # a query (services/progress/recent.py); 0 = every replay asks Postgres.
    sse_replay_window: int = Field(20_000, ge=0)
    # The Pushpin SSE edge (docs/architecture.md). PUBLISH_URL: its publish API, to which the
    # progress service publishes every event (empty: no edge). KEY: its `sig_key`; a stream
    # request with a valid Grip-Sig under it is handed to the edge (empty: none is).
    sse_edge_publish_url: str = ""
    sse_edge_key: str = ""
    # Connections of the exports' own pool, so exports never starve the rest of the service.
    export_pool_size: int = Field(8, ge=1)
    # Seconds the event log keeps the superseded events of finished files (each file's newest
    # event is kept for good); a client resuming from an id older than that gets a snapshot.
    event_retention: float = Field(86_400.0, ge=1)

    @field_validator("smtp_starttls", mode="before")
    @classmethod
    def _tristate(cls, value: Any) -> str:
        # Kept a string (not bool | None) so that every setting round-trips through the
        # environment of a child process; "" means "decide from host and port".
        text = str(value).strip().lower() if value is not None else ""
        if text in ("", "auto", "none"):
            return ""
        if text in ("1", "true", "yes", "on"):
            return "true"
        if text in ("0", "false", "no", "off"):
            return "false"
        raise ValueError("IMUFLOW_SMTP_STARTTLS must be true, false or empty (auto)")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not (value.startswith("file:///") or value.startswith("s3://")):
            raise ValueError("use file:///absolute/path or s3://bucket[/prefix]")
        return value.rstrip("/")

    @property
    def storage_dir(self) -> Path:
        """Where local uploads are stored (one file per upload, named by its id)."""
        if self.storage_url.startswith("file://"):
            return Path(unquote(urlparse(self.storage_url).path))
        return self.data_dir / "uploads"

    @property
    def stack_env_path(self) -> Path:
        return self.data_dir / "stack.env"

    @property
    def ingest_base(self) -> str:
        """Base URL of the ingest service."""
        return (self.ingest_url or f"http://{self.host}:{self.ingest_port}").rstrip("/")

    @property
    def progress_base(self) -> str:
        """Base URL of the progress service (and the web page)."""
        return (self.progress_url or f"http://{self.host}:{self.progress_port}").rstrip("/")

    @property
    def alert_email_recipients(self) -> list[str]:
        """The addresses of IMUFLOW_ALERT_EMAIL_TO (empty: no e-mail alerts)."""
        return [a.strip() for a in self.alert_email_to.split(",") if a.strip()]

    @property
    def smtp_implicit_tls(self) -> bool:
        """Port 465 speaks TLS from the first byte (SMTPS)."""
        return self.smtp_port == 465

    @property
    def smtp_use_starttls(self) -> bool:
        """STARTTLS unless told otherwise, port 25, a loopback host or implicit TLS (SPEC §7)."""
        if self.smtp_implicit_tls:
            return False
        if self.smtp_starttls:
            return self.smtp_starttls == "true"
        return not (self.smtp_port == 25 or _is_loopback(self.smtp_host))

    @model_validator(mode="after")
    def _email_needs_a_server(self) -> Settings:
        if self.alert_email_recipients and not self.smtp_host:
            raise ValueError("IMUFLOW_ALERT_EMAIL_TO is set but IMUFLOW_SMTP_HOST is not")
        if bool(self.smtp_username) != bool(self.smtp_password):
            raise ValueError("set both IMUFLOW_SMTP_USERNAME and IMUFLOW_SMTP_PASSWORD, or neither")
        return self

    def require_servers(self) -> None:
        """Fail fast with a clear message when a service has nothing to talk to."""
        missing = [
            name
            for name, value in (
                ("IMUFLOW_DATABASE_URL", self.database_url),
                ("IMUFLOW_KAFKA_BOOTSTRAP_SERVERS", self.kafka_bootstrap_servers),
            )
            if not value
        ]
        if missing:
            raise SystemExit(
                f"{', '.join(missing)} not set: run `imuflow up` (which starts an embedded "
                f"stack and writes {self.stack_env_path}) or set them to your servers."
            )


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_AWS_KEYS = {
    "AWS_ACCESS_KEY_ID": "IMUFLOW_S3_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY": "IMUFLOW_S3_SECRET_ACCESS_KEY",
}


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `KEY=VALUE` file such as `stack.env`; a missing file gives {}."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, then the stack's `stack.env`, then defaults."""
    base = Settings(data_dir=data_dir) if data_dir else Settings()
    stack = read_env_file(base.stack_env_path)
    from_file: dict[str, Any] = {}
    for key, value in stack.items():
        if key.startswith("IMUFLOW_") and key not in os.environ:
            field = key.removeprefix("IMUFLOW_").lower()
            if field in Settings.model_fields and field != "data_dir":
                from_file[field] = value
        elif key in _AWS_KEYS and not {key, _AWS_KEYS[key]} & os.environ.keys():  # `up --object-store`
            from_file[_AWS_KEYS[key]] = value
    return Settings(**{"data_dir": base.data_dir, **from_file, **overrides})
