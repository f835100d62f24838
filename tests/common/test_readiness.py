"""`/readyz`'s answers come from cached, bounded checks (imuflow/readiness.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from imuflow import readiness
from imuflow.readiness import Readiness, storage_check
from imuflow.storage.local import LocalStorage


async def ok() -> object:
    return None


async def refused() -> object:
    raise ConnectionRefusedError("broker away")


async def hangs() -> object:
    await asyncio.sleep(3600)
    return None


async def test_a_hung_dependency_is_down_within_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readiness, "CHECK_TIMEOUT", 0.2)
    state = Readiness({"postgres": ok, "broker": hangs, "storage": ok}, required=frozenset({"postgres"}))
    began = time.monotonic()
    await state.refresh()
    assert time.monotonic() - began < 1.0
    report = state.report()
    assert report.ready and report.checks == {"postgres": "ok", "broker": "down", "storage": "ok"}
    assert report.detail is not None and "outbox" in report.detail  # says why it stays ready


async def test_a_required_dependency_down_is_not_ready() -> None:
    checks = {"postgres": ok, "broker": refused, "storage": ok}
    state = Readiness(checks, required=frozenset(checks))
    assert not state.report().ready  # never checked yet: not ready
    await state.refresh()
    report = state.report()
    assert not report.ready
    assert report.body() == {
        "status": "unavailable",
        "postgres": "ok",
        "broker": "down",
        "storage": "ok",
        "detail": "broker down",
    }
    assert not state.report(["event fan-out not started"]).ready


async def test_answers_are_cached_between_rounds() -> None:
    calls = 0

    async def counted() -> object:
        nonlocal calls
        calls += 1
        return None

    state = Readiness({"postgres": counted}, required=frozenset({"postgres"}))
    stop = asyncio.Event()
    runner = asyncio.create_task(state.run(stop))
    await asyncio.sleep(0.1)
    for _ in range(1000):  # a probe storm costs no check
        assert state.report().ready
    stop.set()
    await runner
    assert calls == 1


async def test_storage_check(tmp_path: Path) -> None:
    uploads = tmp_path / "data" / "uploads"
    uploads.parent.mkdir()
    await storage_check(LocalStorage(uploads))()  # created on first check
    assert uploads.is_dir()
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with pytest.raises(OSError):
        await storage_check(LocalStorage(blocked / "uploads"))()
