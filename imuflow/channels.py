"""Every Kafka channel as FastStream declares it, and the AsyncAPI document made from them.

`imuflow contracts export` builds the services' own FastStream brokers, unconnected: the
progress consumer's (services/progress/applier.py) and the producer's (imuflow/producer.py),
whose publishers, one per topic, carry the topic's contract message (contracts/events.py);
then it asks FastStream for the AsyncAPI document. Every message the services send goes
through these publishers (the outbox relay, the parser's progress events); the parser
still consumes `files.v1` on aiokafka (docs/architecture.md says why).
"""

from __future__ import annotations

from typing import Any

from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.usecase import DefaultPublisher
from faststream.specification import AsyncAPI

from contracts import events, topics
from imuflow.settings import Settings

MESSAGES: dict[str, Any] = {
    topics.FILES: events.FileQueued,
    topics.PROGRESS: events.ProgressEvent,
    topics.FILES_DEAD_LETTER: events.FileQueued,
}
DESCRIPTIONS = {
    topics.FILES: "File jobs (upload, retry, requeue, re-parse), keyed by file id; consumed by the "
    "parser workers (one group, manual commits after the job).",
    topics.PROGRESS: "What the parsers report, one event per batch, keyed by file id; consumed by the "
    "progress service.",
    topics.FILES_DEAD_LETTER: "Jobs that exhausted their attempts, kept for inspection.",
}


def publishers(broker: KafkaBroker, settings: Settings) -> dict[str, DefaultPublisher]:
    """A publisher per topic of this deployment, with the contract model of its messages."""
    return {
        base: broker.publisher(
            topics.topic_name(settings.kafka_topic_prefix, base),
            schema=MESSAGES[base],
            title=base,
            description=DESCRIPTIONS[base],
        )
        for base in topics.ALL
    }


def asyncapi(*brokers: KafkaBroker) -> dict[str, Any]:
    """FastStream's AsyncAPI 3.0 document of everything registered on `brokers`."""
    spec = AsyncAPI(*brokers, title="imuflow events", version="1", schema_version="3.0.0")
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document
