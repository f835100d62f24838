"""`imuflow status`, `stuck`, `reset-stuck` as a user runs them: `--data-dir` only, as the stack's admin."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from imuflow import db
from imuflow.settings import Settings
from services.progress.operations import WATCHDOG_LOCK
from tests.e2e.helpers import make_token
from tests.ops.jobs import make_job, make_user
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def imuflow(data_dir: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMUFLOW_")}
    env["COLUMNS"] = "250"  # rich wraps tables to the terminal width
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "imuflow.cli.main",
        "--data-dir",
        str(data_dir),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_operator_commands(service_stack: StartStack, test_settings: Settings, tmp_path: Path) -> None:
    url = test_settings.database_url
    stack = await service_stack(services=["progress"])
    # The running watchdog would requeue the stuck job before the operator lists it: hold its
    # advisory lock (it skips a round it cannot lock) until `reset-stuck`.
    holder = await db.connect(url)
    hold = holder.transaction()
    await hold.start()
    await holder.execute("SELECT pg_advisory_xact_lock($1)", WATCHDOG_LOCK)
    conn = await db.connect(url)
    try:
        carol = await make_user(conn, "carol")
        stuck = await make_job(conn, carol, checkpoint_ago=4000, claimed_ago=5000, filename="long.cwa")
        await make_job(conn, carol, status="completed", filename="done.csv")
    finally:
        await conn.close()
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    user_token = await make_token(url, "carol")
    admin_token = await make_token(url, "admin", admin=True)
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_TOKEN={user_token}\nIMUFLOW_ADMIN_TOKEN={admin_token}\n"
    )

    code, out = await imuflow(data_dir, "status")
    assert code == 0, out
    assert "files by status" in out and "long.cwa" in out and "carol" in out and "stuck" in out
    assert "done.csv" not in out  # only jobs in flight are listed

    code, out = await imuflow(data_dir, "stuck")
    assert code == 0 and str(stuck) in out and "1 of 5" in out, out

    # Still holding the watchdog's lock: released before, the watchdog could requeue the job
    # while the CLI starts (a loaded run saw "nothing was stuck"). The manual reset does not
    # take that lock.
    code, out = await imuflow(data_dir, "reset-stuck", "--older-than", "600")
    assert code == 0 and "requeued" in out and str(stuck) in out, out
    await hold.rollback()
    await holder.close()
    code, out = await imuflow(data_dir, "stuck")
    assert code == 0 and "no stuck jobs" in out, out

    # A user's token is not enough.
    code, out = await imuflow(data_dir, "--token", user_token, "stuck")
    assert code == 1 and "403" in out, out
