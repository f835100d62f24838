"""Per-user upload limits, on a simulated clock."""

import uuid

import pytest

from services.ingest.limits import LimitExceeded, UploadLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate_with_retry_after() -> None:
    clock = Clock()
    limiter = UploadLimiter(per_minute=60, burst=3, concurrent=10, clock=clock)
    user = uuid.uuid4()
    for _ in range(3):
        limiter.acquire(user)
        limiter.release(user)
    with pytest.raises(LimitExceeded) as exc:
        limiter.acquire(user)
    assert exc.value.retry_after == 1
    clock.now += 1.0  # one token per second at 60/min
    limiter.acquire(user)


def test_concurrency_cap_is_per_user() -> None:
    limiter = UploadLimiter(per_minute=6000, burst=100, concurrent=2, clock=Clock())
    alice, bob = uuid.uuid4(), uuid.uuid4()
    limiter.acquire(alice)
    limiter.acquire(alice)
    with pytest.raises(LimitExceeded):
        limiter.acquire(alice)
    limiter.acquire(bob)  # another user is not affected
    limiter.release(alice)
    limiter.acquire(alice)


def test_defaults_allow_fifty_uploads_in_a_row() -> None:
    limiter = UploadLimiter(per_minute=600, burst=200, concurrent=8, clock=Clock())
    user = uuid.uuid4()
    for _ in range(50):
        limiter.acquire(user)
        limiter.release(user)
