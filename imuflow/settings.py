"""Settings shared by every imuflow process (environment, prefix `IMUFLOW_`).

Each service builds one `Settings` at startup (never at import) and passes it down.
Defaults serve the embedded stack; `DATA_DIR/stack.env` written by `imuflow up` is
read too, so `imuflow --data-dir DIR <command>` reaches that stack with no other
configuration. Real environment variables always win over the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GIB = 1024**3


class Settings(BaseSettings):
    """Every `IMUFLOW_*` setting of SPEC §4, validated at startup."""

    model_config = SettingsConfigDict(env_prefix="IMUFLOW_", extra="ignore")

    data_dir: Path = Path("./.imuflow")
    database_url: str = ""
    kafka_bootstrap_servers: str = ""
    ingest_port: int = Field(8001, ge=0, le=65535)
    progress_port: int = Field(8000, ge=0, le=65535)
    parser_metrics_port: int = Field(8002, ge=0, le=65535)
    host: str = "127.0.0.1"
    batch_size: int = Field(50_000, ge=1, le=5_000_000)
    adaptive_batching: bool = True
    max_upload_bytes: int = Field(4 * GIB, ge=1)
    # Per-user upload limits (429 with Retry-After beyond them); generous by default.
    upload_rate_per_minute: float = Field(600.0, gt=0)
    upload_burst: int = Field(200, ge=1)
    max_concurrent_uploads: int = Field(8, ge=1)
    stuck_after: float = Field(300.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    # Alerts from the app (stuck-job actions, failed jobs): a webhook, off when empty.
    alert_webhook_url: str = ""
    alert_webhook_format: Literal["json", "slack"] = "json"

    # Where the page (progress service) and the CLI reach ingest; also the CORS origin list.
    ingest_url: str = ""
    progress_url: str = ""
    cors_origins: str = ""  # comma-separated; empty = the progress URL only
    # What the CLI authenticates with (written to stack.env by `imuflow up`).
    token: str = ""
    admin_token: str = ""

    # Kafka tuning, kept here so Apache Kafka and the embedded broker share one code path.
    kafka_topic_partitions: int = Field(8, ge=1)
    kafka_replication_factor: int = Field(1, ge=1)
    # Tansu answers a waiting fetch only when this expires, so it bounds browser latency.
    kafka_fetch_max_wait_ms: int = Field(10, ge=0)
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

    # Benchmark-only switch: with False the parser emits no progress events and no checkpoint.
    progress_tracking: bool = True
    log_level: str = "INFO"
    sse_ping_seconds: float = Field(15.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def storage_dir(self) -> Path:
        """Where uploads are stored (one file per upload, named by its id)."""
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
    return Settings(**{"data_dir": base.data_dir, **from_file, **overrides})
