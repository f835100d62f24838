"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from imuflow.stack.broker import Broker, start_broker


@pytest.fixture
async def private_broker(tmp_path: Path) -> AsyncIterator[Broker]:
    """A Tansu broker of this test alone, to kill or stop (doing that to the session's shared
    broker would hurt the other tests)."""
    broker = await start_broker(None, log_path=tmp_path / "tansu.log")
    try:
        yield broker
    finally:
        broker.stop()
