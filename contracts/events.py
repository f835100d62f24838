"""Events on Kafka, version 1. Never change a published shape: add a V2 beside it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1] = 1
    event_id: UUID = Field(default_factory=uuid4)
    file_id: UUID
    user_id: UUID


class FileQueued(_Event):
    """A file to parse (topic `files.v1`): a new upload, a retry, a requeue or a re-parse."""

    type: Literal["file.queued"] = "file.queued"
    reason: Literal["upload", "retry", "requeue", "reparse"] = "upload"
    run: int = Field(1, ge=1)  # a re-parse from scratch starts a new run
    storage_uri: str
    filename: str
    size_bytes: int = Field(ge=0)
    format: str | None = None
    sensor: str | None = None
    timezone: str = "UTC"
    queued_at: datetime

    @classmethod
    def of_file(
        cls,
        file: Mapping[str, Any],
        reason: Literal["upload", "retry", "requeue", "reparse"],
        queued_at: datetime | None = None,
    ) -> FileQueued:
        """The event of an `imu_data_files` row (or anything with its column names).

        The only place a FileQueued is built: ingest, the progress service, the parser and
        the outbox relay (for rows that SQL requeued) all come here, so none can drift.
        """
        return cls(
            file_id=file["id"],
            user_id=file["user_id"],
            reason=reason,
            run=file.get("run", 1),
            storage_uri=file["storage_uri"],
            filename=file["filename"],
            size_bytes=file["size_bytes"],
            format=file["format"],
            sensor=file["sensor"],
            timezone=file["timezone"],
            queued_at=queued_at or datetime.now(UTC),
        )


class _ParseEvent(_Event):
    attempt: int = Field(ge=1)
    run: int = Field(1, ge=1)


class ParseStarted(_ParseEvent):
    """A parser took the job (again); `resumed_from_samples` > 0 when it resumes."""

    type: Literal["parse.started"] = "parse.started"
    format: str
    bytes_total: int = Field(ge=0)
    resumed_from_samples: int = Field(0, ge=0)
    resumed_from_batch: int = Field(0, ge=0)
    estimated_total_samples: int | None = Field(None, ge=0)
    started_at: datetime


class BatchProgress(_ParseEvent):
    """One batch committed (its samples and the resume checkpoint, in one transaction)."""

    type: Literal["parse.progress"] = "parse.progress"
    batch_number: int = Field(ge=1)
    samples_in_batch: int = Field(ge=0)
    total_samples_processed: int = Field(ge=0)
    estimated_total_samples: int = Field(ge=0)
    bytes_processed: int = Field(ge=0)
    bytes_total: int = Field(ge=0)
    rows_skipped: int = Field(0, ge=0)
    warnings: list[str] = Field(default_factory=list)
    batch_processing_time_ms: float = Field(ge=0)
    started_at: datetime
    completed_at: datetime


class ParseCompleted(_ParseEvent):
    """The file is parsed; `total_samples` is exact."""

    type: Literal["parse.completed"] = "parse.completed"
    batch_number: int = Field(ge=0)
    total_samples: int = Field(ge=0)
    rows_skipped: int = Field(0, ge=0)
    warnings: list[str] = Field(default_factory=list)
    completed_at: datetime


class ParseFailed(_ParseEvent):
    """The job failed; `retryable` is False when retrying cannot help (bad file)."""

    type: Literal["parse.failed"] = "parse.failed"
    reason: str  # short machine-readable kind: format, io, database, attempts, internal
    error_message: str
    retryable: bool = False
    failed_at: datetime


class ParseCancelled(_ParseEvent):
    """The parser stopped at a batch boundary because the user cancelled."""

    type: Literal["parse.cancelled"] = "parse.cancelled"
    batch_number: int = Field(ge=0)
    cancelled_at: datetime


ProgressEvent = Annotated[
    ParseStarted | BatchProgress | ParseCompleted | ParseFailed | ParseCancelled,
    Field(discriminator="type"),
]
PROGRESS_EVENT: TypeAdapter[ProgressEvent] = TypeAdapter(ProgressEvent)
FILE_EVENT: TypeAdapter[FileQueued] = TypeAdapter(FileQueued)

EVENT_MODELS: tuple[type[BaseModel], ...] = (
    FileQueued,
    ParseStarted,
    BatchProgress,
    ParseCompleted,
    ParseFailed,
    ParseCancelled,
)


def encode(event: BaseModel) -> bytes:
    """The wire form of an event (UTF-8 JSON)."""
    return event.model_dump_json().encode()
