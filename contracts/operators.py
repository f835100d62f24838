"""API records of the operator dashboard (admin only): slowing jobs, parsers, trends, failures."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel


class SlowingJob(BaseModel):
    """A row of `get_slowing_streaming_processes`: a parsing job heading for the stuck rule."""

    file_id: UUID
    user_id: UUID
    owner: str
    filename: str
    attempts: int
    batch_number: int
    samples_processed: int
    median_rate: float  # samples/s over the batches before the slow ones
    recent_rate: float  # samples/s over the slow ones
    slow_batches: int
    slowing_since: datetime


class SlowingJobList(BaseModel):
    """`GET /api/admin/slowing`."""

    items: list[SlowingJob]


class ParserState(BaseModel):
    """One parser process, from the heartbeat row it writes every few seconds."""

    parser_id: str
    hostname: str
    pid: int
    started_at: datetime
    seen_at: datetime
    seen_seconds_ago: float
    live: bool  # a heartbeat within three intervals
    concurrency: int
    jobs_in_flight: int
    samples_parsed: int
    consumer_lag: int | None


class ParserList(BaseModel):
    """`GET /api/admin/parsers`: parsers seen in the last day, live first, and consumer lag."""

    items: list[ParserState]
    consumer_lag: dict[str, int | None]  # by consumer group: the parsers' report, this replica's own


class TrendPoint(BaseModel):
    """One hour or day of `streaming_trends`."""

    bucket_start: datetime
    bucket_seconds: float
    batches: int
    samples: int
    samples_per_second: float
    samples_per_busy_second: float | None
    files_completed: int
    files_failed: int
    failed_by_reason: dict[str, int]
    queue_wait_p50_seconds: float | None
    queue_wait_p95_seconds: float | None
    parse_p50_seconds: float | None
    parse_p95_seconds: float | None


class TrendReport(BaseModel):
    """`GET /api/admin/trends?days=7|30&bucket=hour|day`."""

    days: int
    bucket: Literal["hour", "day"]
    points: list[TrendPoint]


class FailedJob(BaseModel):
    """A file that ended failed, with its owner and reason."""

    file_id: UUID
    filename: str
    owner: str
    reason: str  # format, attempts, stuck, dead_letter, unknown
    error_message: str | None
    attempts: int
    finished_at: datetime


class FailedJobList(BaseModel):
    """`GET /api/admin/failures?hours=N`: the failures of the last N hours, newest first."""

    hours: int
    items: list[FailedJob]
