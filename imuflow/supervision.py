"""Named background tasks with a supervisor: a task that dies takes the process down.

A half-alive service (HTTP up, relay dead) is worse than a dead one, so when a task
ends with an error the process is asked to stop (SIGTERM to itself) and the
orchestrator (`imuflow up`, systemd, Kubernetes) restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from imuflow.logs import fields

log = logging.getLogger(__name__)
TaskFn = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class TaskSupervisor:
    """Starts named tasks that share one stop event, and stops them together."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.stop_event = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, fn: TaskFn) -> None:
        """Run `fn(stop_event)` as a named task, watched."""
        task = asyncio.create_task(fn(self.stop_event), name=f"{self.service}:{name}")
        task.add_done_callback(self._on_done)
        self._tasks[name] = task

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stop_event.is_set():
            return
        exc = task.exception()
        log.error(
            "background task %s ended; stopping the process so it is restarted",
            task.get_name(),
            exc_info=exc,
            extra=fields(action="task_died", task=task.get_name()),
        )
        self.stop_event.set()
        os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self, grace: float = 10.0) -> None:
        """Ask every task to stop, wait up to `grace` seconds, then cancel the rest."""
        self.stop_event.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
