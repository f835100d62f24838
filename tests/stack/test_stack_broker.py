"""Embedded Tansu broker: starts on a free port, round-trips a message, restarts in place;
with its log in S3 a SIGKILLed broker comes back with its messages and committed offsets."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from imuflow.stack.broker import BrokerError, kafka_ready, start_broker
from imuflow.stack.procs import free_port
from tests.objectstore import S3Server

pytestmark = pytest.mark.integration


async def _round_trip(bootstrap: str, topic: str) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", partition=0)
    finally:
        await producer.stop()
    # Manual assignment: no consumer-group join (Tansu takes ~5 s for the first one).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        message = await asyncio.wait_for(consumer.getone(), 20)
    finally:
        await consumer.stop()
    value: bytes = message.value
    return value


async def test_broker_round_trip_and_restart_same_port(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "broker.log"
    broker = await start_broker(None, log_path=log_path)
    try:
        assert await _round_trip(broker.bootstrap_servers, "rt") == b"hello"
    finally:
        broker.stop()
    assert not await kafka_ready(broker.bootstrap_servers, within=0.5)

    again = await start_broker(broker.port, log_path=log_path)
    try:
        # Memory-only storage: a restarted broker is empty, so a new topic round-trips.
        assert await _round_trip(again.bootstrap_servers, "rt2") == b"hello"
    finally:
        again.stop()
    assert "listening on" in log_path.read_text()


async def test_broker_retries_while_port_is_held(tmp_path: Path) -> None:
    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    # Release the port while start_broker is backing off, as an old broker would.
    asyncio.get_running_loop().call_later(0.8, holder.close)
    broker = await start_broker(port, log_path=tmp_path / "broker.log", retry_for=15)
    try:
        assert broker.port == port
    finally:
        broker.stop()


async def test_broker_gives_up_on_a_port_that_stays_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match="in use"):
            await start_broker(port, log_path=tmp_path / "broker.log", retry_for=1)


async def test_broker_on_s3_keeps_messages_and_committed_offsets_through_sigkill(
    tmp_path: Path, s3_server: S3Server
) -> None:
    storage = await s3_server.broker_storage("tansu")
    log_path = tmp_path / "broker.log"
    broker = await start_broker(None, log_path=log_path, storage=storage)
    tp = TopicPartition("kept", 0)
    try:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(tp.topic, f"m{i}".encode(), partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, group_id="g", enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign([tp])  # aiokafka commits only for assigned partitions
            await consumer.commit({tp: 3})
        finally:
            await consumer.stop()
    finally:
        broker.process.kill()  # a crash: nothing flushed on the way out
        broker.process.wait()

    again = await start_broker(broker.port, log_path=log_path, storage=storage)
    try:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=again.bootstrap_servers,
            group_id="g",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            assert await consumer.committed(tp) == 3
            consumer.assign([tp])
            consumer.seek(tp, 0)
            got = [(await asyncio.wait_for(consumer.getone(), 20)).value for _ in range(5)]
        finally:
            await consumer.stop()
    finally:
        again.stop()
    assert got == [f"m{i}".encode() for i in range(5)]
