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
    """Smallest and largest stored value of one axis (m/s², rad/s or µT)."""

    min: float
    max: float


class SensorSummary(BaseModel):
    """What one sensor of a file recorded (sensor None: the file names no sensor)."""

    sensor: str | None
    samples: int
    start_ns: int | None
    end_ns: int | None
    duration_seconds: float | None
    sample_rate_hz: float | None
    ranges: dict[str, AxisRange]


class FileSummary(BaseModel):
    """`GET /api/files/{id}/summary`: the stored samples of a file, per sensor."""

    file_id: UUID
    status: FileStatus
    samples: int
    duration_seconds: float | None
    sample_rate_hz: float | None
    sensors: list[SensorSummary]
