"""Per-user upload limits: a token bucket for the rate and a cap on concurrent uploads.

Defaults are generous (a user uploading 50 files back to back is normal use); the point
is that one client cannot monopolise ingest's disk and bandwidth. State lives in this
process: with several ingest replicas each enforces the limits on its own share.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID


class LimitExceeded(Exception):
    """The caller must wait `retry_after` seconds (the 429's Retry-After)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


@dataclass
class _Bucket:
    tokens: float
    updated: float
    active: int = 0


@dataclass
class UploadLimiter:
    """Admits uploads per user: `acquire` before streaming, `release` after."""

    per_minute: float
    burst: int
    concurrent: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[UUID, _Bucket] = field(default_factory=dict)

    def acquire(self, user_id: UUID) -> None:
        """Take one upload slot or raise LimitExceeded."""
        now = self.clock()
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_minute / 60)
        bucket.updated = now
        if bucket.active >= self.concurrent:
            raise LimitExceeded(
                f"at most {self.concurrent} uploads at once per user; wait for one to finish", 1
            )
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) * 60 / self.per_minute)
            raise LimitExceeded(f"upload rate limit ({self.per_minute:g} per minute) reached", max(wait, 1))
        bucket.tokens -= 1
        bucket.active += 1

    def release(self, user_id: UUID) -> None:
        """Give the slot back (call in `finally`)."""
        bucket = self._buckets.get(user_id)
        if bucket is not None and bucket.active > 0:
            bucket.active -= 1
        self._forget_idle()

    def _forget_idle(self) -> None:
        # Bounded memory: a full, idle bucket carries no information.
        if len(self._buckets) < 10_000:
            return
        now = self.clock()
        for user_id, bucket in list(self._buckets.items()):
            refill = bucket.tokens + (now - bucket.updated) * self.per_minute / 60
            if bucket.active == 0 and refill >= self.burst:
                del self._buckets[user_id]
