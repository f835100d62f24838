"""Kafka clients built from settings; the only place that knows aiokafka's options.

Everything broker-specific is a setting, so the embedded Tansu broker and Apache Kafka
share this code. Neither idempotent producers nor transactions are used (Tansu has
neither): delivery is at-least-once and every consumer is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from contracts import topics
from imuflow.settings import Settings

log = logging.getLogger(__name__)


def topic(settings: Settings, base: str) -> str:
    """The full name of a topic in this deployment."""
    return topics.topic_name(settings.kafka_topic_prefix, base)


async def ensure_topics(settings: Settings) -> None:
    """Create the deployment's topics if missing (idempotent; racing creators are fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                topic(settings, base),
                num_partitions=settings.kafka_topic_partitions,
                replication_factor=settings.kafka_replication_factor,
            )
            for base in topics.ALL
            if topic(settings, base) not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def producer(settings: Settings) -> AIOKafkaProducer:
    """A producer that waits for all in-sync replicas (not started)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        linger_ms=0,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
    )


def consumer(settings: Settings, group_id: str, *topic_bases: str, **extra: Any) -> AIOKafkaConsumer:
    """A group consumer that commits only what the caller says is done (not started)."""
    return AIOKafkaConsumer(
        *(topic(settings, base) for base in topic_bases),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        **extra,
    )


async def consumer_lag(consumer: AIOKafkaConsumer) -> int:
    """Messages between this member's position and the end of its partitions."""
    partitions: set[TopicPartition] = consumer.assignment()
    if not partitions:
        return 0
    ends = await consumer.end_offsets(list(partitions))
    lag = 0
    for tp in partitions:
        try:
            position = await consumer.position(tp)
        except (KafkaError, AssertionError):
            continue
        lag += max(0, ends.get(tp, 0) - position)
    return lag


async def retry_forever(
    what: str, start: Callable[[], Awaitable[None]], stop: asyncio.Event | None = None
) -> None:
    """Call `start` until it succeeds, backing off to 5 s; for clients at startup."""
    delay = 0.2
    while True:
        try:
            await start()
            return
        except (KafkaError, OSError) as exc:
            if stop is not None and stop.is_set():
                raise
            log.warning("%s not reachable, retrying in %.1fs: %s", what, delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
