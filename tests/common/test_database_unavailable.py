"""A statement Postgres could not run answers 503 either way; only a permanent error (ours,
not an outage) is logged at ERROR, the level Sentry's logging integration reports."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from imuflow import dberrors
from imuflow.web import database_unavailable


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.UndefinedTableError('relation "imu_data_files" does not exist'),
        dberrors.Unavailable("value out of range", transient=False),
    ],
)
def test_a_permanent_error_is_logged_at_error(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        answer = database_unavailable(error, {"Tus-Resumable": "1.0.0"})
    assert answer.status_code == 503 and answer.headers == {"Tus-Resumable": "1.0.0"}
    (logged,) = _errors(caplog)
    assert logged.exc_info is not None and logged.exc_info[1] is error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("connect call failed"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        dberrors.Unavailable("connection lost"),
    ],
)
def test_an_outage_is_not_an_error_report(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        answer = database_unavailable(error)
    assert answer.status_code == 503
    assert "try again" in answer.detail
    assert _errors(caplog) == []
