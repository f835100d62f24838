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

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from contracts import topics
from imuflow import metrics, retrying
from imuflow.aio import unless_stopped, wait_any
from imuflow.producer import FastStreamProducer
from imuflow.settings import Settings

log = logging.getLogger(__name__)
COMMIT_TIMEOUT_SECONDS = 10.0
TOPIC_CHECK_SECONDS = 10.0
LAG_SECONDS = 5.0  # how often the consumer-lag gauges are brought up to date


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


async def keep_topics(settings: Settings, stop: asyncio.Event) -> None:
    """Re-create the deployment's topics whenever they disappear, until `stop` is set.

    A broker that restarts empty (Tansu keeps nothing; a wiped Kafka cluster) loses the
    topics created at startup. A broker that auto-creates topics gets them back with its
    own partition count; one that does not would leave consumers idle and the outbox
    relay failing forever, so every service checks every few seconds.
    """
    wanted = {topic(settings, base) for base in topics.ALL}
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), TOPIC_CHECK_SECONDS)
        if stop.is_set():
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        try:
            await admin.start()
            missing = wanted - set(await admin.list_topics())
            if missing:
                log.warning("topics missing (broker restarted empty?), creating: %s", sorted(missing))
                await ensure_topics(settings)
        except (KafkaError, OSError) as exc:
            log.debug("topic check failed (broker down?): %s", exc)
        finally:
            await admin.close()


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int] | None = None) -> bool:
    """Commit offsets (default: everything consumed); False, logged, if it cannot be done.

    aiokafka retries a commit for a partition the broker does not know forever; after a
    broker restarted empty, that wedged the consumer. A bounded wait is safe: an
    uncommitted message is delivered again and every consumer is idempotent.
    """
    try:
        await asyncio.wait_for(consumer.commit(offsets), COMMIT_TIMEOUT_SECONDS)
    except (KafkaError, TimeoutError) as exc:
        log.warning("offset commit failed (the messages will be delivered again): %r", exc)
        return False
    return True


def producer_options(settings: Settings) -> dict[str, Any]:
    """Wait for all in-sync replicas, send at once; for aiokafka and FastStream alike."""
    return {
        "acks": "all",
        "linger_ms": 0,
        "request_timeout_ms": 15_000,
        "retry_backoff_ms": 200,
        # The relays refuse larger events themselves (dead letters); never below the default.
        "max_request_size": max(1_048_576, settings.kafka_max_message_bytes + 1_024),
    }


def consumer_options(settings: Settings) -> dict[str, Any]:
    """Group membership timings from settings; for aiokafka and FastStream subscribers alike."""
    return {
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
        "max_poll_interval_ms": settings.kafka_max_poll_interval_ms,
        "rebalance_timeout_ms": settings.kafka_rebalance_timeout_ms,
    }


def producer(settings: Settings) -> FastStreamProducer:
    """The services' producer: FastStream's publishers on a broker of ours (not started)."""
    return FastStreamProducer(broker(settings), settings)


def broker(settings: Settings, *, consumer_only: bool = False) -> KafkaBroker:
    """A FastStream broker with the same producer options (not started).

    Its per-message logs go to DEBUG: every batch of every job passes through.
    """
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        consumer_only=consumer_only,
        logger=logging.getLogger("imuflow.faststream"),
        log_level=logging.DEBUG,
        **producer_options(settings),
    )


def consumer(settings: Settings, group_id: str, *topic_bases: str, **extra: Any) -> AIOKafkaConsumer:
    """A group consumer that commits only what the caller says is done (not started);
    options in `extra` win over consumer_options (the parser's own fetch wait)."""
    return AIOKafkaConsumer(
        *(topic(settings, base) for base in topic_bases),
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **(consumer_options(settings) | extra),
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


async def report_lag(
    group: str, consumer_of: Callable[[], AIOKafkaConsumer | None], stop: asyncio.Event
) -> None:
    """Keep `imuflow_consumer_lag{group}` current until `stop` is set.

    With the broker away a lag read waits out the consumer's request timeout (40 s); it is
    given up at the stop, or it would hold the process's stop up that long.
    """
    gauge = metrics.CONSUMER_LAG.labels(group)
    while not stop.is_set():
        consumer = consumer_of()
        if consumer is not None:
            with contextlib.suppress(KafkaError, AssertionError, OSError):
                lag = await unless_stopped(stop, consumer_lag(consumer))
                if lag is not None:
                    gauge.set(lag)
        await wait_any(stop, timeout=LAG_SECONDS)


async def retry_forever(
    what: str, start: Callable[[], Awaitable[None]], stop: asyncio.Event | None = None
) -> None:
    """Call `start` until it succeeds, backing off to 5 s; for clients at startup.

    Until `stop` is set (then retrying.Stopped, or the last error); without one, for ever.
    """
    policy = retrying.until_stopped(
        stop or asyncio.Event(), f"{what} not reachable", transient=retrying.of_type(KafkaError, OSError)
    )
    await policy(start)
