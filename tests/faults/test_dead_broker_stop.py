"""A parser whose broker is gone still stops promptly on SIGTERM (exit 0, well within the
supervisor's grace), instead of waiting out its Kafka clients' request timeouts and being
SIGKILLed ("service ignored SIGTERM, killing"). Runs on a private broker, never the session's."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from imuflow.stack.broker import Broker
from tests.faults.helpers import kill, service_pid
from tests.servers import SettingsFactory
from tests.stack import StartStack
from tests.waiting import until

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(120)]
PROMPT = 4.0  # seconds: under the stack supervisor's 5 s grace; it takes 1.3 s (15 s before the fix)


async def test_parser_with_a_dead_broker_stops_promptly_on_sigterm(
    settings_factory: SettingsFactory, service_stack: StartStack, private_broker: Broker
) -> None:
    settings = settings_factory(kafka_bootstrap_servers=private_broker.bootstrap_servers)
    stack = await service_stack(settings, services=("parser",))
    log_path = stack.logs["parser"]

    async def member() -> bool:  # in the group, polling, with its lag gauge reading offsets
        return "partitions assigned" in log_path.read_text()

    await until(member, "the parser joined its group", within=30)

    private_broker.stop()
    await asyncio.sleep(2.0)  # its clients find the broker gone (connections refused, retrying)
    state = stack.supervisor.services["parser"]
    process = state.process
    assert process is not None
    pid = service_pid(stack.supervisor, "parser")
    began = time.monotonic()
    kill(pid, signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), 30)
    took = time.monotonic() - began
    assert code == 0, f"parser exited with {code}:\n{log_path.read_text()[-4000:]}"
    assert took < PROMPT, f"parser took {took:.1f}s to stop:\n{_log(log_path)}"


def _log(path: Path) -> str:
    """The parser's log without aiokafka's reconnect noise (a line every 100 ms)."""
    lines = [line for line in path.read_text().splitlines() if '"logger": "aiokafka"' not in line]
    return "\n".join(lines[-60:])
