"""An in-memory stand-in for the parser's group consumer (aiokafka's AIOKafkaConsumer).

It keeps what the worker relies on: per-partition logs and positions, pause and resume
(a paused partition hands out nothing), seek, commits, `max_records` across partitions, and
an eager rebalance (`rebalance`) that calls the listener's revoke and assign like aiokafka
does, positions of the new assignment starting again from the committed offsets and every
pause forgotten.
"""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

Records = list[ConsumerRecord[bytes, bytes]]


class MemoryConsumer:
    """One group member alone on `partitions` partitions of `topic`."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic = topic
        self.partitions = [TopicPartition(topic, p) for p in range(partitions)]
        self.logs: dict[TopicPartition, Records] = {tp: [] for tp in self.partitions}
        self.committed: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        self._position: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._listener: ConsumerRebalanceListener | None = None
        self._arrived = asyncio.Event()

    def append(self, partition: int, value: bytes) -> int:
        """Add a record to a partition's log; return its offset."""
        tp = self.partitions[partition]
        offset = len(self.logs[tp])
        record = ConsumerRecord(self.topic, partition, offset, 0, 0, None, value, None, 0, len(value), ())
        self.logs[tp].append(record)
        self._arrived.set()
        return offset

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None:
        assert topics == [self.topic], topics
        self._listener = listener

    async def start(self) -> None:
        await self.rebalance(set(self.partitions))

    async def stop(self) -> None:
        self._assigned = set()

    async def rebalance(self, assigned: set[TopicPartition]) -> None:
        """Revoke everything, then assign `assigned` (an eager rebalance)."""
        assert self._listener is not None
        await self._listener.on_partitions_revoked(set(self._assigned))
        self._assigned = set(assigned)
        self._paused = set()  # a new assignment starts unpaused
        self._position = {tp: self.committed.get(tp, 0) for tp in assigned}
        await self._listener.on_partitions_assigned(set(assigned))

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused |= {tp for tp in partitions if tp in self._assigned}

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused -= set(partitions)
        self._arrived.set()

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if partition not in self._assigned:
            raise IllegalStateError(f"no current assignment for partition {partition}")
        self._position[partition] = offset
        self._arrived.set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    async def getmany(
        self, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, Records]:
        """What the unpaused partitions hold past their positions, waiting up to `timeout_ms`."""
        batch = self._take(max_records)
        if not batch and timeout_ms > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
            batch = self._take(max_records)
        return batch

    def _take(self, max_records: int | None) -> dict[TopicPartition, Records]:
        left = max_records if max_records is not None else 1_000_000
        batch: dict[TopicPartition, Records] = {}
        for tp in sorted(self._assigned - self._paused, key=lambda t: t.partition):
            records = self.logs[tp][self._position[tp] :][:left]
            if records:
                batch[tp] = records
                self._position[tp] += len(records)
                left -= len(records)
            if left <= 0:
                break
        return batch
