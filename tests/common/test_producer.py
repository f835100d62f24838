"""The services' producer while the broker is away: starts fail cleanly, as often as retried."""

from __future__ import annotations

import asyncio
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from imuflow import kafka
from imuflow.settings import Settings
from imuflow.stack.procs import free_port


async def test_a_start_while_the_broker_is_away_fails_and_leaves_no_producer_behind(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", data_dir=tmp_path / "data")
    producer = kafka.producer(settings)
    with pytest.raises(KafkaConnectionError, match="not connected"):
        producer.client  # noqa: B018  (the property is the check)
    loop_errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()  # the tests share one loop: put it back
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):  # what the services' start retry does while the broker is away
                with pytest.raises(KafkaConnectionError):
                    await producer.start()
            gc.collect()
    finally:
        loop.set_exception_handler(handler)
    await producer.stop()  # never connected: nothing to close, no error
    # FastStream's connect would leave an unstarted aiokafka producer per try, reported on
    # collection as "Unclosed AIOKafkaProducer" (a ResourceWarning and a loop error).
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert loop_errors == []
