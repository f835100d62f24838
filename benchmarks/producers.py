"""What sending through FastStream costs the outbox relay, beside aiokafka's producer.

`python -m benchmarks.producers [--messages N]` starts the embedded Tansu broker and sends
the relay's way (a batch of 200 keyed ~400-byte JSON events queued without waiting, then
every send's future awaited) through both producers with the same options
(`kafka.producer_options`): aiokafka's `AIOKafkaProducer.send`, and the services' producer
(`kafka.producer`: a FastStream publisher per topic, imuflow/producer.py). Rounds
alternate between the two so load changes hit both; each figure is the median over rounds.
It also gives the process CPU per message, where FastStream's extra work (its publish
command, middlewares) shows; a third row sends with aiokafka and FastStream's two headers
(content-type, correlation id), to tell the headers' cost from FastStream's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from benchmarks.common import Table, show
from contracts import topics
from imuflow import kafka
from imuflow.settings import Settings
from imuflow.stack.broker import start_broker

MESSAGES = 4_000
BATCH = 200  # the relay's claim size (imuflow/outbox.py BATCH)
ROUNDS = 5

Send = Callable[[str, bytes, bytes], Awaitable["asyncio.Future[Any]"]]


def payloads(count: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs shaped like file-job events."""
    out = []
    for i in range(count):
        file_id = str(uuid.uuid4())
        event = {"schema_version": 1, "type": "file.queued", "file_id": file_id, "n": i, "pad": "x" * 300}
        out.append((file_id.encode(), json.dumps(event, separators=(",", ":")).encode()))
    return out


async def one_round(send: Send, topic: str, messages: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """Wall and CPU seconds to send every message, BATCH at a time, each batch confirmed."""
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(messages), BATCH):
        futures = [await send(topic, key, value) for key, value in messages[start : start + BATCH]]
        results = await asyncio.gather(*futures)
        assert all(r.offset >= 0 for r in results)
    return time.perf_counter() - wall, time.process_time() - cpu


async def measure(count: int) -> Table:
    with tempfile.TemporaryDirectory(prefix="imuflow-bench-") as tmp:
        broker = await start_broker(None, log_path=Path(tmp) / "broker.log")
        try:
            settings = Settings(
                kafka_bootstrap_servers=broker.bootstrap_servers,
                kafka_topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                kafka_topic_partitions=8,
                data_dir=Path(tmp) / "data",
            )
            await kafka.ensure_topics(settings)
            topic = kafka.topic(settings, topics.FILES)
            raw = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap_servers, **kafka.producer_options(settings)
            )
            ours = kafka.producer(settings)
            await raw.start()
            await ours.start()
            try:

                async def raw_send(t: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
                    sent: asyncio.Future[Any] = await raw.send(t, value=value, key=key)
                    return sent

                headers = [
                    ("content-type", b"application/json"),
                    ("correlation_id", uuid.uuid4().hex.encode()),
                ]

                async def raw_headers_send(t: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
                    sent: asyncio.Future[Any] = await raw.send(t, value=value, key=key, headers=headers)
                    return sent

                async def ours_send(t: str, key: bytes, value: bytes) -> asyncio.Future[Any]:
                    return await ours.send(t, value=value, key=key)

                senders: dict[str, Send] = {
                    "aiokafka AIOKafkaProducer": raw_send,
                    "aiokafka, FastStream's two headers": raw_headers_send,
                    "FastStream publisher (kafka.producer)": ours_send,
                }
                messages = payloads(count)
                for send in senders.values():  # warm-up: metadata, connections
                    await one_round(send, topic, messages[:BATCH])
                figures: dict[str, list[tuple[float, float]]] = {name: [] for name in senders}
                for _ in range(ROUNDS):
                    for name, send in senders.items():
                        figures[name].append(await one_round(send, topic, messages))
            finally:
                await ours.stop()
                await raw.stop()
        finally:
            broker.stop()
    table = Table(
        f"Outbox relay sends: aiokafka's producer vs FastStream's publisher ({count:,} events, "
        f"batches of {BATCH})",
        ["producer", "events/s", "ms per batch", "CPU µs per event"],
    )
    for name, runs in figures.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        table.rows.append([name, round(count / wall), wall / (count / BATCH) * 1000, cpu / count * 1e6])
    table.notes.append(
        f"Median of {ROUNDS} interleaved rounds, embedded Tansu broker, 8 partitions, acks=all; "
        "CPU is this process's (the broker runs apart)."
    )
    return table


def run() -> list[Table]:
    """The tables for docs/benchmarks.md."""
    return show([asyncio.run(measure(MESSAGES))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    args = parser.parse_args()
    show([asyncio.run(measure(args.messages))])


if __name__ == "__main__":
    main()
