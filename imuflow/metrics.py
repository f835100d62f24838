"""The Prometheus metrics of SPEC §4, one definition for every service.

Every service exports every family from process start; label values that are known
up front are touched at import so no family is empty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

from contracts import topics

if TYPE_CHECKING:
    from imuflow.settings import Settings

# "stuck": failed by the stuck-job watchdog once its attempts were spent.
# "dead_letter": its own job event could not be published (imuflow/outbox.py).
FAILURE_REASONS = ("format", "io", "database", "attempts", "internal", "stuck", "dead_letter")
# Why an outbox row was dead-lettered: over IMUFLOW_KAFKA_MAX_MESSAGE_BYTES, not a valid
# event, or refused by the broker for what it is.
DEAD_LETTER_REASONS = ("too_large", "invalid", "rejected")

UPLOADS = Counter("imuflow_uploads", "Uploads accepted by ingest", ["outcome"])
UPLOAD_BYTES = Counter("imuflow_upload_bytes", "Bytes of accepted uploads")
SAMPLES_PARSED = Counter("imuflow_samples_parsed", "Samples parsed and stored")
BATCH_DURATION = Histogram(
    "imuflow_batch_duration_seconds",
    "Time to parse and store one batch",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2.5, 5, 10),
)
FILES_IN_FLIGHT = Gauge("imuflow_files_in_flight", "Files a parser is working on now")
PARSE_FAILURES = Counter("imuflow_parse_failures", "Jobs that ended failed", ["reason"])
CHECKPOINT_WRITE = Histogram(
    "imuflow_checkpoint_write_seconds",
    "Time to commit one batch's checkpoint (progress service: one applied poll)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
PROGRESS_EVENTS = Counter("imuflow_progress_events", "Progress events consumed", ["outcome"])
CONSUMER_LAG = Gauge("imuflow_consumer_lag", "Messages not yet consumed", ["group"])
SSE_CLIENTS = Gauge("imuflow_sse_clients", "Connected SSE clients")
# Every statement this process sent to Postgres (asyncpg's query logger, imuflow/db.py):
# what a reconnect storm costs the database is read from it (tests/progress/test_reconnect_storm.py).
# `source`: "request" while serving an HTTP request (and in what it started), else "background".
DB_QUERIES = Counter("imuflow_db_queries", "Statements sent to Postgres by this process", ["source"])
EVENT_TO_SSE = Histogram(
    "imuflow_event_to_sse_seconds",
    "Batch completed (parser clock) to the event written to an SSE client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
STUCK_JOBS = Gauge("imuflow_stuck_jobs", "Jobs that match the stuck rule now")
# Beyond SPEC §4: what the stuck-job watchdog did, and what the alert webhook delivered.
WATCHDOG_ACTIONS = Counter("imuflow_watchdog_actions", "Stuck jobs the watchdog acted on", ["action"])
ALERT_NOTIFICATIONS = Counter("imuflow_alert_notifications", "Alert webhook deliveries", ["outcome"])
ALERT_EMAILS = Counter(
    "imuflow_alert_emails", "Alert e-mail digests (dropped: alerts past the bound)", ["outcome"]
)
# Early warning (SPEC §7): parsing jobs whose batch rate fell below a third of their median.
SLOWING_JOBS = Gauge("imuflow_slowing_jobs", "Parsing jobs that are slowing down now")
# SPEC §7: outbox rows set aside because they can never be published.
DEAD_LETTERS = Counter("imuflow_dead_letters", "Outbox rows set aside as dead letters", ["topic", "reason"])
# Resumable (tus) uploads, SPEC §7.
TUS_IN_PROGRESS = Gauge("imuflow_tus_uploads_in_progress", "Unfinished resumable uploads (every user)")
TUS_BYTES = Counter("imuflow_tus_bytes_received", "Bytes received by resumable-upload PATCHes")
TUS_RESUMES = Counter("imuflow_tus_resumes", "Resumable uploads continued after a break (HEAD at an offset)")
TUS_EXPIRED = Counter("imuflow_tus_uploads_expired", "Unfinished resumable uploads expired and removed")

for _outcome in ("accepted", "duplicate", "rejected"):
    UPLOADS.labels(_outcome)
for _reason in FAILURE_REASONS:
    PARSE_FAILURES.labels(_reason)
for _outcome in ("applied", "stale", "invalid"):
    PROGRESS_EVENTS.labels(_outcome)
for _action in ("requeued", "failed"):
    WATCHDOG_ACTIONS.labels(_action)
for _outcome in ("sent", "failed", "dropped"):
    ALERT_NOTIFICATIONS.labels(_outcome)
    ALERT_EMAILS.labels(_outcome)
for _topic in topics.ALL:
    for _reason in DEAD_LETTER_REASONS:
        DEAD_LETTERS.labels(_topic, _reason)


def touch_consumer_groups(settings: Settings) -> None:
    """Export `imuflow_consumer_lag` for both consumer groups from process start.

    Every process exports every family (SPEC §4), so one that does not consume a group
    reports 0 for it: aggregate this gauge with `max by (group)`, never `sum`.
    """
    for group in (settings.parser_group_id, settings.progress_group_id):
        CONSUMER_LAG.labels(group)
