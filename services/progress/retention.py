"""Prunes the SSE event log: finished files' superseded events, after IMUFLOW_EVENT_RETENTION.

`file_events` gets a row per batch of every job, so without pruning it grows with every
sample ever parsed. A finished file needs only its newest event (its state, and the id its
snapshot row carries); the rest is needed only by clients resuming from before it, and a
client away longer than the retention gets the full current state instead (the
pruned-through mark in `file_events_retention` says so). Events of unfinished files are
kept whatever their age: a client following a long job still gets its every state change.
Every replica prunes; concurrent deletes of the same rows are harmless.
"""

from __future__ import annotations

import asyncio
import logging

from imuflow.aio import wait_any
from imuflow.logs import fields
from services.progress.repository import ProgressRepository, Unavailable

log = logging.getLogger("imuflow.progress.retention")
BATCH = 10_000  # rows per DELETE, so one round never holds long locks


def interval_for(retention: float) -> float:
    """Seconds between rounds: a tenth of the retention, between 1 s and 5 min."""
    return min(max(retention / 10.0, 1.0), 300.0)


async def prune_forever(repo: ProgressRepository, retention: float, stop: asyncio.Event) -> None:
    """Prune a round, then again every `interval_for(retention)` seconds, until `stop`."""
    while True:
        try:
            removed = await prune_once(repo, retention)
        except Unavailable as exc:
            log.warning("event log pruning skipped: %s", exc)
        else:
            if removed:
                log.info("event log pruned", extra=fields(action="prune_events", removed=removed))
        if await wait_any(stop, timeout=interval_for(retention)):
            return


async def prune_once(repo: ProgressRepository, retention: float) -> int:
    """Delete every prunable event now, a batch at a time; how many."""
    total = 0
    while True:
        removed = await repo.prune_events(retention, BATCH)
        total += removed
        if removed < BATCH:
            return total
