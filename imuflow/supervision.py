"""Named background tasks with a supervisor: a task that dies stops the whole service.

A half-alive service (HTTP up, relay dead) is worse than a dead one, so when a task ends
with an error the supervisor sets the stop event its tasks share and calls the service's
failure callback; the service then stops the way it stops on SIGTERM and the orchestrator
(`imuflow up`, systemd, Kubernetes) restarts it. The parser hands in the stop event its
signal handler sets (one stop path); a web service's callback asks uvicorn to shut down
(`runner.stop_serving`), which runs the lifespan's shutdown and so this supervisor's stop.

How long a stop may take comes from one setting, `IMUFLOW_STOP_GRACE`: in-flight work (a
parser job reaching a batch boundary, a request finishing) gets that long, a task then
CLOSE_SECONDS more to close its clients before it is cancelled, and `imuflow up` kills a
service that is still alive after `kill_after(settings)`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from imuflow.logs import fields
from imuflow.settings import Settings

log = logging.getLogger(__name__)
TaskFn = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
# What a task may take, once its in-flight work is done or abandoned, to close its clients.
CLOSE_SECONDS = 3.0


def kill_after(settings: Settings) -> float:
    """Seconds after SIGTERM a process supervisor should wait before SIGKILL: the tasks'
    grace, then as long again for the process to close its pools and producer."""
    return settings.stop_grace + 2 * CLOSE_SECONDS


class TaskDied(Exception):
    """A background task of the service died; the service stopped so it is restarted."""


class TaskSupervisor:
    """Starts named tasks that share one stop event, and stops them together."""

    def __init__(
        self,
        service: str,
        stop: asyncio.Event,
        *,
        grace: float,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """`stop` is the event every task watches (set on stop and when a task dies);
        `grace` the seconds tasks get for their in-flight work; `on_failure` what else
        a died task must trigger (a service whose main loop waits on `stop` needs nothing)."""
        self.service = service
        self.stop_event = stop
        self.grace = grace
        self.on_failure = on_failure
        self.failure: BaseException | None = None  # why the first task that died ended
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
            "background task %s ended; stopping the service so it is restarted",
            task.get_name(),
            exc_info=exc,
            extra=fields(action="task_died", task=task.get_name()),
        )
        self.failure = exc or RuntimeError(f"task {task.get_name()} returned before the stop")
        self.stop_event.set()
        if self.on_failure is not None:
            self.on_failure()

    async def stop(self) -> None:
        """Ask every task to stop, wait up to grace + CLOSE_SECONDS, then cancel the rest."""
        self.stop_event.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.grace + CLOSE_SECONDS)
        for task in pending:
            log.warning("task %s did not stop in time; cancelling it", task.get_name())
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
