"""Shapes of the HTTP API and of SSE `data`, version 1 (SPEC §4)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

FileStatus = Literal["uploaded", "queued", "parsing", "completed", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
SSE_EVENT_TYPES = ("progress", "completed", "failed", "cancelled")


class FileRecord(BaseModel):
    """One uploaded file and its processing state."""

    model_config = ConfigDict(extra="ignore")

    id: UUID
    filename: str
    size_bytes: int
    sha256: str
    format: str | None
    status: FileStatus
    samples_processed: int
    sample_count: int | None
    sample_count_exact: bool
    duplicate_of: UUID | None
    children: list[UUID] = Field(default_factory=list)
    parent_id: UUID | None = None
    percent: float = Field(ge=0, le=100)
    samples_per_second: float | None
    eta_seconds: float | None
    eta_low_seconds: float | None
    eta_high_seconds: float | None
    batch_number: int
    rows_skipped: int
    warnings: list[str]
    units: dict[str, str] = Field(default_factory=dict)
    error_message: str | None
    attempts: int = 0
    run: int = 1
    created_at: datetime
    processing_started_at: datetime | None
    last_checkpoint_at: datetime | None
    completed_at: datetime | None


class FileList(BaseModel):
    """A page of the caller's files, newest first."""

    items: list[FileRecord]
    # Opaque cursor of the next page (`?cursor=`), null on the last page.
    next: str | None = None


class FileProgress(BaseModel):
    """The row of `get_file_processing_progress(file_uuid)`."""

    model_config = ConfigDict(extra="allow")

    file_id: UUID
    status: FileStatus
    samples_processed: int
    sample_count: int | None
    percent: float
    samples_per_second: float | None
    eta_seconds: float | None
    processing_started_at: datetime | None
    last_checkpoint_at: datetime | None


class BatchLogEntry(BaseModel):
    """One row of `streaming_processing_logs`."""

    batch_number: int
    run: int
    attempt: int
    samples_in_batch: int
    total_samples_processed: int
    batch_processing_time_ms: float
    started_at: datetime
    completed_at: datetime


class BatchLog(BaseModel):
    """A file's batch log, oldest first."""

    items: list[BatchLogEntry]


class ErrorBody(BaseModel):
    """Every error answer: `{"detail": "..."}`."""

    detail: str


class SessionRequest(BaseModel):
    """Exchange a token for the page's HttpOnly session cookie."""

    token: str = Field(min_length=1, max_length=200)


class ReparseRequest(BaseModel):
    """Options of a re-parse from scratch; None keeps the file's current choice."""

    format: str | None = None
    sensor: str | None = None
    timezone: str | None = None


class PageConfig(BaseModel):
    """`GET /api/config`: what the web page needs before sign-in."""

    ingest_url: str


class AxisRange(BaseModel):
    """Smallest and largest stored value of one axis (m/s², rad/s or µT), and more."""

    min: float
    max: float
    mean: float | None = None
    # Samples at the device's full scale, where the format gives it (.cwa, .gt3x); else None.
    clipped: int | None = None


class SensorSummary(BaseModel):
    """What one sensor of a file recorded (sensor None: the file names no sensor)."""

    sensor: str | None
    samples: int
    start_ns: int | None
    end_ns: int | None
    duration_seconds: float | None
    sample_rate_hz: float | None  # from the median interval between samples
    ranges: dict[str, AxisRange]
    # The longest interval between two consecutive samples, and how many intervals are
    # longer than 5 sample periods (None where the file has no time base).
    longest_gap_seconds: float | None = None
    gaps: int | None = None


class FileSummary(BaseModel):
    """`GET /api/files/{id}/summary`: the stored samples of a file, per sensor."""

    file_id: UUID
    status: FileStatus
    samples: int
    duration_seconds: float | None
    sample_rate_hz: float | None
    sensors: list[SensorSummary]
    longest_gap_seconds: float | None = None  # over every sensor
    gaps: int | None = None


class AxisPreview(BaseModel):
    """Per bucket, the smallest and largest stored value (None: the bucket holds no sample)."""

    min: list[float | None]
    max: list[float | None]


class FilePreview(BaseModel):
    """`GET /api/files/{id}/preview`: equal-width buckets over [t_start_ns, t_end_ns]
    (or over sample indexes where the file has no time: then both are None)."""

    points: int
    t_start_ns: int | None
    t_end_ns: int | None
    axes: dict[str, AxisPreview]


class AdminJob(FileRecord):
    """`GET /api/admin/jobs` item: a file record with its owner and stuck-rule state."""

    owner: str
    owner_id: UUID
    attempts_used: int
    is_stuck: bool
    seconds_since_checkpoint: float | None  # queued or parsing only
    stuck_limit_seconds: float | None
    last_error: str | None
    # The early warning: parsing, but 5 batches in a row below a third of its median rate.
    is_slowing: bool = False


class AdminJobList(BaseModel):
    """Every user's files, newest first, and how many files are in each status."""

    items: list[AdminJob]
    counts: dict[str, int]


class StuckJob(BaseModel):
    """A row of `get_stuck_streaming_processes`."""

    file_id: UUID
    user_id: UUID
    owner: str
    filename: str
    status: FileStatus
    attempts: int
    attempts_used: int
    max_attempts: int
    run: int
    samples_processed: int
    resume_samples: int
    resume_batch_number: int
    stuck_since: datetime
    stuck_for_seconds: float
    limit_seconds: float
    median_batch_seconds: float | None
    last_error: str | None


class StuckJobList(BaseModel):
    """`GET /api/admin/stuck`: the jobs the stuck rule matches now, longest stuck first."""

    items: list[StuckJob]


class StuckResetRequest(BaseModel):
    """`POST /api/admin/stuck/reset`; None applies the configured rule (STUCK_AFTER)."""

    older_than_seconds: float | None = Field(None, gt=0, le=30 * 86_400)


class StuckAction(BaseModel):
    """A row of `reset_stuck_streaming_processes`: what was done to one stuck job."""

    file_id: UUID
    action: Literal["requeued", "failed"]
    attempts: int
    reason: str


class StuckResetResult(BaseModel):
    """What a reset requeued or failed."""

    items: list[StuckAction]


class PerformanceRow(BaseModel):
    """A row of `streaming_performance_metrics` (scope `overall`, or one `file`)."""

    scope: Literal["overall", "file"]
    file_id: UUID | None
    filename: str | None
    status: FileStatus | None
    batches: int
    samples: int
    batch_seconds: float
    samples_per_batch_second: float | None
    samples_per_wall_second: float | None
    batch_ms_p50: float | None
    batch_ms_p95: float | None
    batch_ms_p99: float | None
    batch_ms_max: float | None
    files: int
    files_completed: int
    files_failed: int
    files_retried: int
    failure_rate: float | None
    last_batch_at: datetime | None


class PerformanceReport(BaseModel):
    """`GET /api/admin/performance`: overall throughput and the most recent files."""

    overall: PerformanceRow
    files: list[PerformanceRow]


class DeadLetter(BaseModel):
    """An outbox row set aside because it can never be published (SPEC §7)."""

    id: int
    topic: str  # the topic's base name, e.g. files.v1
    key: str
    type: str | None  # the event's `type`, e.g. file.queued
    payload_bytes: int
    error: str | None
    failures: int
    replays: int
    failed_file: bool  # dead-lettering it failed its file (a replay queues the file again)
    created_at: datetime
    dead_at: datetime
    file_id: UUID | None
    user_id: UUID | None
    file_status: FileStatus | None


class DeadLetterList(BaseModel):
    """`GET /api/admin/dead-letters`: newest first, and how many there are in all."""

    items: list[DeadLetter]
    total: int


class DeadLetterReplay(BaseModel):
    """What a replay did: the row is pending again; `requeued_file` names a file queued again."""

    id: int
    requeued_file: UUID | None
