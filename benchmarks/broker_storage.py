"""Should `imuflow up` keep the broker's log in the embedded object store by default?

`python -m benchmarks.broker_storage [--messages N]` starts the embedded Tansu broker both
ways, side by side: in memory (today's default), and with its log in S3 on the embedded
SeaweedFS (`imuflow up --object-store`). For each it measures the start-up time (the
object store's included for S3), the resident memory of what it adds (the broker, plus
`weed mini` for S3) after the run, produce -> consume latency of single messages
(acks=all, a consumer waiting on the partition), and a SIGKILL + restart: how long until
the broker answers again and how many of the produced messages it still serves.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.common import Table, percentile, show
from imuflow.stack.broker import MEMORY, Broker, BrokerStorage, start_broker
from imuflow.stack.objectstore import ObjectStore, start_object_store

MESSAGES = 300


def rss_mib(*pids: int) -> float:
    """Resident memory of the processes, MiB."""
    return sum(psutil.Process(pid).memory_info().rss for pid in pids) / 2**20


async def latencies(bootstrap: str, topic: str, count: int) -> list[float]:
    """Seconds from send to receipt for `count` messages sent one at a time."""
    tp = TopicPartition(topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10, auto_offset_reset="latest")
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm", partition=0)  # creates the topic
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        seen: list[float] = []
        for i in range(count):
            began = time.perf_counter()
            await producer.send_and_wait(topic, str(i).encode(), partition=0)
            message = await asyncio.wait_for(consumer.getone(), 10)
            assert message.value == str(i).encode()
            seen.append(time.perf_counter() - began)
        return seen
    finally:
        await consumer.stop()
        await producer.stop()


async def served(bootstrap: str, topic: str) -> int:
    """How many messages partition 0 of `topic` still serves."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        if tp.topic not in await consumer.topics():
            return 0
        ends = await consumer.end_offsets([tp])
        got = 0
        deadline = time.monotonic() + 10
        while got < ends[tp] and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=500)
            got += sum(len(v) for v in batch.values())
        return got
    finally:
        await consumer.stop()


async def one(kind: str, directory: Path, messages: int) -> list[object]:
    """Start, measure, kill and restart one broker set-up; its table row."""
    began = time.monotonic()
    store: ObjectStore | None = None
    storage: BrokerStorage = MEMORY
    if kind == "s3":
        store = await start_object_store(directory / "objectstore", bucket="imuflow")
        storage = await store.broker_storage()
    log_path = directory / "broker.log"
    broker: Broker = await start_broker(None, log_path=log_path, storage=storage)
    started = time.monotonic() - began
    try:
        topic = f"bench-{uuid.uuid4().hex[:6]}"
        seen = await latencies(broker.bootstrap_servers, topic, messages)
        broker_rss = rss_mib(broker.process.pid)
        store_rss = rss_mib(store.process.pid) if store else 0.0
        broker.process.kill()
        broker.process.wait()
        killed = time.monotonic()
        broker = await start_broker(broker.port, log_path=log_path, storage=storage)
        back = time.monotonic() - killed
        kept = await served(broker.bootstrap_servers, topic)
    finally:
        broker.stop()
        if store is not None:
            store.stop()
    return [
        "S3 (SeaweedFS)" if store else "memory",
        round(started, 2),
        round(broker_rss, 1),
        round(store_rss, 1),
        round(percentile(seen, 50) * 1000, 1),
        round(percentile(seen, 99) * 1000, 1),
        round(len(seen) / sum(seen)),
        round(back, 2),
        f"{kept} of {messages + 1}",
    ]


async def measure(messages: int) -> Table:
    """Both set-ups, one after the other, each in its own temporary directory."""
    table = Table(
        "Embedded broker: log in memory vs in the embedded object store",
        [
            "broker log",
            "start-up s",
            "broker RSS MiB",
            "weed RSS MiB",
            "p50 ms",
            "p99 ms",
            "msgs/s (one at a time)",
            "restart after kill -9 s",
            "messages kept",
        ],
    )
    for kind in ("memory", "s3"):
        with tempfile.TemporaryDirectory(prefix=f"imuflow-bench-{kind}-") as tmp:
            table.rows.append(await one(kind, Path(tmp), messages))
    table.notes.append(
        f"{messages} messages produced one at a time (acks=all) and each awaited by a consumer; "
        "start-up for S3 includes starting `weed mini`; RSS after the run (`weed` also serves the "
        "uploads under `--object-store`, so only the broker's column is the durable log's own cost)."
    )
    return table


def run(messages: int = MESSAGES) -> list[Table]:
    """The table (for run_all-style callers)."""
    return [asyncio.run(measure(messages))]


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    show(run(parser.parse_args().messages))


if __name__ == "__main__":
    main()
