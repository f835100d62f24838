"""`imuflow dead-letters [--replay ID]` as an operator runs it: `--data-dir` only, as the stack's admin."""

from __future__ import annotations

from pathlib import Path

import pytest

from imuflow import db
from imuflow.settings import Settings
from tests.e2e.helpers import make_token
from tests.faults.helpers import wait_for
from tests.faults.test_dead_letters import HUGE, record_poison_upload
from tests.ops.jobs import make_user
from tests.ops.test_cli_ops import imuflow
from tests.stack import StartStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_dead_letters_command_lists_and_replays(
    service_stack: StartStack, test_settings: Settings, tmp_path: Path
) -> None:
    url = test_settings.database_url
    stack = await service_stack(services=["progress"])
    data_dir = tmp_path / "cli"
    data_dir.mkdir()
    user_token = await make_token(url, "dave")
    admin_token = await make_token(url, "admin", admin=True)
    (data_dir / "stack.env").write_text(
        f"IMUFLOW_PROGRESS_URL={stack.progress_url}\nIMUFLOW_TOKEN={user_token}\nIMUFLOW_ADMIN_TOKEN={admin_token}\n"
    )
    code, out = await imuflow(data_dir, "dead-letters")
    assert code == 0 and "no dead letters" in out, out

    pool = await db.create_pool(url)
    try:
        conn = await db.connect(url)
        try:
            dave = await make_user(conn, "dave")
        finally:
            await conn.close()
        poison = await record_poison_upload(pool, dave, HUGE)
    finally:
        await pool.close()
    # The progress service's relay sets it aside.
    outbox_id = await wait_for(
        url, "SELECT id FROM outbox WHERE key = $1 AND dead_at IS NOT NULL", str(poison), timeout=20
    )

    code, out = await imuflow(data_dir, "dead-letters")
    assert code == 0, out
    assert "dead letters (1 in all)" in out and str(poison) in out and "file.queued" in out, out
    assert "over the broker's limit" in out, out
    code, out = await imuflow(data_dir, "status")
    assert code == 0 and "1 dead letter(s)" in out, out

    code, out = await imuflow(data_dir, "dead-letters", "--replay", str(outbox_id))
    assert code == 0 and f"dead letter {outbox_id} replayed" in out and str(poison) in out, out
    await wait_for(
        url,
        "SELECT replays = 1 AND dead_at IS NOT NULL FROM outbox WHERE id = $1",
        outbox_id,
        timeout=20,
        what="the replayed (still too large) row set aside again",
    )
    code, out = await imuflow(data_dir, "dead-letters", "--replay", "999999")
    assert code == 1 and "404" in out, out

    # A user's token is not enough.
    code, out = await imuflow(data_dir, "--token", user_token, "dead-letters")
    assert code == 1 and "403" in out, out
