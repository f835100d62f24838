"""Kafka topic names and the message key, defined once for every service.

A deployment prefixes every name (`IMUFLOW_KAFKA_TOPIC_PREFIX`, default `imuflow.`), so
that several stacks or test runs can share one cluster. Every message is keyed by its
file id, so all events of one file stay in order on one partition.
"""

from __future__ import annotations

from uuid import UUID

# File jobs for the parsers: uploads, retries, requeues, re-parses.
FILES = "files.v1"
# What the parsers report: started, one progress event per batch, completed, failed.
PROGRESS = "progress.v1"
# Jobs that exhausted their attempts, kept for inspection.
FILES_DEAD_LETTER = "files.dlq.v1"

ALL = (FILES, PROGRESS, FILES_DEAD_LETTER)


def topic_name(prefix: str, base: str) -> str:
    """The full topic name of `base` in a deployment with `prefix`."""
    return f"{prefix}{base}"


def message_key(file_id: UUID | str) -> bytes:
    """The Kafka key of every message about one file."""
    return str(file_id).encode()
