"""Which database errors are worth retrying: the server was away, not the data wrong.

A retry loop that retries everything wedges on a poison message (an event whose values do
not fit a column fails the same way forever); one that retries nothing loses work when
Postgres restarts. So: connection loss, shutdown, overload and serialisation conflicts
are transient; any other server or driver error is the data's fault and is not retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg

# Everything a statement can fail with through asyncpg, server or driver side: what a worker
# catches so that nothing escapes it (`is_transient` then says whether to retry).
# InternalClientError is a pooled connection the server dropped mid-operation ("cannot
# switch to state ...; another operation is in progress"): when Postgres restarted under a
# parser it escaped the partition worker and left a job unparsed.
DRIVER: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,  # connection closed, pool closing
    asyncpg.InternalClientError,  # a connection dropped mid-operation
    asyncpg.PostgresConnectionError,  # SQLSTATE 08: connection exceptions
    asyncpg.OperatorInterventionError,  # 57: admin shutdown, cannot connect now
    asyncpg.InsufficientResourcesError,  # 53: too many connections, out of memory
    asyncpg.TransactionRollbackError,  # 40: serialisation failure, deadlock
)


def is_transient(exc: BaseException) -> bool:
    """True when retrying the same statement later can succeed."""
    return isinstance(exc, TRANSIENT)


class Unavailable(Exception):
    """Postgres could not run a statement: the one database error every service raises.

    Each repository names its own subclass (ingest `StorageUnavailable`, parser
    `TransientError`, progress `Unavailable`) so its callers catch one type; all are made
    the same way, by `translated`. `transient` says whether retrying can help.
    """

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


@contextlib.contextmanager
def translated(error: type[Unavailable] = Unavailable, what: str = "") -> Iterator[None]:
    """Turn any driver error raised inside into `error` (`raise ... from` the driver's)."""
    try:
        yield
    except DRIVER as exc:
        message = f"{what}: {exc}" if what else str(exc)
        raise error(message, transient=is_transient(exc)) from exc
