"""Every retry with backoff and jitter goes through here, on tenacity.

Two shapes cover the services, and a third the CLI. `until_stopped` outlasts an outage of a server the process
cannot work without (Postgres, the broker): it retries the errors its caller names as
transient, backing off with jitter to a ceiling, for as long as the process runs; the
process's stop event bounds it, and interrupts its sleeps. `bounded` gives up after a number
of attempts or seconds (a webhook, a parse that failed transiently). `patiently` is the
synchronous one of the CLI's tus client, which has no event loop: it gives up after some
seconds, honours a server's Retry-After, and its caller starts it afresh after each step
forward, so that time is time without progress. An error the policy
does not name is raised at once: retrying a poison message wedges its consumer.

Why tenacity and not stamina (docs/architecture.md): both are async; stamina's defaults are
good but it cannot wait on our stop event, and its testing switch turns all retries off at
once, where tenacity takes the sleep as an argument, so a test sees every delay it asked for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from imuflow.aio import wait_any

log = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]
Transient = Callable[[BaseException], bool]


class Stopped(Exception):
    """The stop event was set while waiting for the next attempt (none was made)."""


class _StopSet(stop_base):
    """Stop retrying once the process's stop event is set."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.stop.is_set()


def _sleeper(stop: asyncio.Event | None) -> Sleep:
    """A sleep that ends early, raising Stopped, when `stop` is set."""

    async def sleep(seconds: float) -> None:
        if stop is None:
            await asyncio.sleep(seconds)
        elif await wait_any(stop, timeout=seconds):
            raise Stopped

    return sleep


def _logger(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("%s failed (attempt %d), retrying in %.1fs: %r", what, state.attempt_number, wait, error)

    return before_sleep


def until_stopped(
    stop: asyncio.Event,
    what: str,
    *,
    transient: Transient,
    initial: float = 0.2,
    maximum: float = 5.0,
    sleep: Sleep | None = None,
) -> AsyncRetrying:
    """Retry `transient` errors until `stop` is set, backing off from `initial` to `maximum` s.

    Once `stop` is set: Stopped if it came during a wait, else the last error.
    """
    return AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=_StopSet(stop),
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        sleep=sleep or _sleeper(stop),
        before_sleep=_logger(what),
        reraise=True,
    )


def bounded(
    what: str,
    *,
    transient: Transient,
    attempts: int | None,
    within: float | None = None,
    initial: float = 0.5,
    maximum: float = 30.0,
    stop: asyncio.Event | None = None,
    sleep: Sleep | None = None,
) -> AsyncRetrying:
    """Retry `transient` errors at most `attempts` times in all (None: any number) and for
    at most `within` seconds; at least one of the two bounds it."""
    if attempts is None and within is None:
        raise ValueError("bounded needs attempts or within")
    conditions: list[stop_base] = []
    if attempts is not None:
        conditions.append(stop_after_attempt(attempts))
    if within is not None:
        conditions.append(stop_after_delay(within))
    if stop is not None:
        conditions.append(_StopSet(stop))
    return AsyncRetrying(
        retry=retry_if_exception(transient),
        stop=stop_any(*conditions),
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        sleep=sleep or _sleeper(stop),
        before_sleep=_logger(what),
        reraise=True,
    )


def while_result(
    again: Callable[[Any], bool],
    stop: asyncio.Event,
    what: str,
    *,
    initial: float,
    maximum: float,
    sleep: Sleep | None = None,
) -> AsyncRetrying:
    """Call again while `again(result)` (an outcome that asks for a retry), until `stop`.

    What bounds it is the caller's (a parse attempt is counted in Postgres); a stop during
    a wait raises Stopped, with no new call.
    """
    return AsyncRetrying(
        retry=retry_if_result(again),
        stop=stop_never,
        wait=wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial),
        sleep=sleep or _sleeper(stop),
        before_sleep=_logger(what),
    )


def patiently(
    what: str,
    *,
    transient: Transient,
    within: float,
    initial: float = 0.5,
    maximum: float = 10.0,
    asked: Callable[[BaseException], float | None] = lambda exc: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Retrying:
    """Sync: retry `transient` errors for `within` seconds, waiting at least what `asked(error)`
    says the server asked for (Retry-After); then the last error is raised."""
    backoff = wait_exponential_jitter(multiplier=initial, max=maximum, jitter=initial)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return max(backoff(state), (asked(error) if error is not None else None) or 0.0)

    return Retrying(
        retry=retry_if_exception(transient),
        stop=stop_after_delay(within),
        wait=wait,
        sleep=sleep,
        before_sleep=_logger(what),
        reraise=True,
    )


def of_type(*types: type[BaseException]) -> Transient:
    """A `transient` predicate: any of these exception types."""
    return lambda exc: isinstance(exc, types)
