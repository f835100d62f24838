"""The services' Kafka producer: FastStream's publishers, one per topic (imuflow/channels.py).

The outbox relay, the lost-event check, readiness and the parser's progress events depend
only on `Producer`, what they use of a producer: aiokafka's `send(topic, *, value, key)`
returning the send's future, `client` for cluster metadata (the topic checks), `start`. The
services pass a `FastStreamProducer`; the fault tests pass stand-ins that wrap it (a broker
away, a flaky partition, a missing topic), which is why the relay does not call FastStream
itself. Every send goes through the topic's FastStream publisher, so the AsyncAPI document
declares exactly the publishers that send.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, TypeAlias, cast

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import RecordMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl
from faststream.kafka.publisher.usecase import DefaultPublisher

from imuflow import channels
from imuflow.settings import Settings

# Every event is JSON the sender encoded itself (the relay stores it, measures it first).
HEADERS = {"content-type": "application/json"}
# What a send resolves to: where the broker put the message, or None on FastStream's
# in-memory test broker, which delivers to its subscribers at once and places nothing.
Placement: TypeAlias = RecordMetadata | None


class Producer(Protocol):
    """What imuflow sends with: a topic, a key and a value; the send's future."""

    @property
    def client(self) -> Any:
        """aiokafka's client: `await client.fetch_all_metadata()` lists the broker's topics."""

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Placement]:
        """Queue one message; the future resolves once the broker took it (or fails)."""

    async def start(self) -> None:
        """Connect; raises (a KafkaError) while the broker is away."""


class FastStreamProducer:
    """A FastStream `KafkaBroker` (imuflow.kafka.broker: the producer options from settings)
    with a publisher per topic of this deployment; not connected until `start`."""

    def __init__(self, broker: KafkaBroker, settings: Settings) -> None:
        self.broker = broker
        self.bootstrap_servers = settings.kafka_bootstrap_servers
        self.publishers: dict[str, DefaultPublisher] = {
            publisher.topic: publisher for publisher in channels.publishers(broker, settings).values()
        }

    async def start(self) -> None:
        """Connect FastStream's producer (and its admin client); raises while the broker is away."""
        # FastStream makes a new aiokafka producer on every connect and drops it when its
        # start fails; aiokafka then logs it as unclosed (an asyncio error) when collected.
        # The services retry the start while the broker is away, so a bare client that is
        # always closed asks first.
        probe = AIOKafkaClient(bootstrap_servers=self.bootstrap_servers)
        try:
            await probe.bootstrap()
        finally:
            await probe.close()
        try:
            await self.broker.connect()
        except BaseException:
            # A half-made connection (producer up, admin client not) would be made again
            # over it by the next try, leaving the first producer running.
            await self.broker.stop()
            raise

    async def stop(self) -> None:
        """Flush and close the producer."""
        await self.broker.stop()

    async def send(self, topic: str, *, value: bytes, key: bytes) -> asyncio.Future[Placement]:
        """Publish through the topic's publisher without waiting for the broker's answer.

        A topic that no publisher declares is a bug here (KeyError), never a new channel.
        """
        sent = await self.publishers[topic].publish(value, key=key, headers=HEADERS, no_confirm=True)
        if isinstance(sent, asyncio.Future):
            return cast("asyncio.Future[Placement]", sent)
        delivered: asyncio.Future[Placement] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)  # the in-memory broker ran the subscribers already
        return delivered

    @property
    def client(self) -> Any:
        """The aiokafka client under FastStream's producer (KafkaConnectionError before `start`).

        FastStream 0.7.8 exposes no metadata call of its own (only its admin client's
        `describe_cluster`, in `ping`); the relay's topic check and the lost-event check
        need the producer's own view of the cluster, the one its sends are routed by.
        """
        state = cast(AioKafkaFastProducerImpl, self.broker.config.producer)._producer
        if not state:
            raise KafkaConnectionError("the producer is not connected to the broker yet")
        return state.producer.client
