"""What the soak checks at the end, straight from Postgres and from what the users saw."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from benchmarks.soak.users import TERMINAL, Sent, User

KINDS = ("ordinary", "damaged", "hostile")


@dataclass
class Verdict:
    """Counts per kind and every violation found, each with a line saying what and where."""

    per_kind: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    violations: list[str] = field(default_factory=list)
    invariants: Counter[str] = field(default_factory=Counter)

    def bad(self, what: str, line: str) -> None:
        self.invariants[what] += 1
        self.violations.append(f"{what}: {line}")


async def check(database_url: str, users: list[User]) -> Verdict:
    """Every upload ended as it should, every batch is logged, every follower saw it right."""
    verdict = Verdict()
    for what in ("duplicate sample_index", "batch log holes", "SSE backwards", "SSE missed final state"):
        verdict.invariants[what] = 0
    conn = await asyncpg.connect(database_url)
    try:
        counts = await _sample_counts(conn)
        for user in users:
            for sent in user.sent:
                await _check_upload(conn, user, sent, verdict, counts)
    finally:
        await conn.close()
    return verdict


async def _sample_counts(conn: asyncpg.Connection) -> dict[Any, tuple[int, int]]:
    """Rows and distinct (sensor, sample_index) per file, in one pass over imu_samples.

    One query per file took minutes after a 30-minute soak: the BRIN index on file_id
    covers wide ranges when many files were parsed at once, so each re-read most of it."""
    rows = await conn.fetch(
        "SELECT file_id, count(*) AS n, count(DISTINCT (coalesce(sensor, ''), sample_index)) AS d"
        " FROM imu_samples GROUP BY file_id"
    )
    return {r["file_id"]: (r["n"], r["d"]) for r in rows}


async def _check_upload(
    conn: asyncpg.Connection, user: User, sent: Sent, verdict: Verdict, counts: dict[Any, tuple[int, int]]
) -> None:
    tally = verdict.per_kind[sent.expect.kind]
    tally["uploads"] += 1
    if sent.record is None:
        refused = sent.status_code is not None and 400 <= sent.status_code < 500 and sent.detail
        if sent.expect.samples is None and refused:
            tally["refused with a reason"] += 1
        else:
            tally["wrong"] += 1
            verdict.violations.append(f"{sent.name}: upload answered {sent.status_code} {sent.detail!r}")
        return
    file_id = sent.record["id"]
    rows = await conn.fetch(
        "SELECT f.*, (SELECT coalesce(array_agg(c.id), '{}') FROM imu_data_files c WHERE c.parent_id = f.id)"
        " AS child_ids FROM imu_data_files f WHERE f.id = $1::uuid",
        file_id,
    )
    if not rows:
        tally["wrong"] += 1
        verdict.violations.append(f"{sent.name} {file_id}: record vanished")
        return
    row = rows[0]
    jobs = [row] if not row["child_ids"] else await _children(conn, row["child_ids"])
    statuses = {j["status"] for j in jobs}
    if not statuses <= TERMINAL:
        tally["unfinished"] += 1
        verdict.violations.append(f"{sent.name} {file_id}: still {sorted(statuses)}")
        return
    if sent.expect.samples is None:
        if all(j["status"] == "failed" and j["error_message"] for j in jobs) or (
            row["status"] == "failed" and row["error_message"]
        ):
            tally["failed with a reason"] += 1
        else:
            tally["wrong"] += 1
            verdict.violations.append(f"{sent.name} {file_id}: hostile file ended {sorted(statuses)}")
    else:
        await _check_completed(conn, sent, row, verdict, counts)
    for job in jobs:
        _check_seen(user, sent, job, verdict)


async def _children(conn: asyncpg.Connection, ids: list[Any]) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM imu_data_files WHERE id = ANY($1::uuid[])", ids))


async def _check_completed(
    conn: asyncpg.Connection,
    sent: Sent,
    row: asyncpg.Record,
    verdict: Verdict,
    counts: dict[Any, tuple[int, int]],
) -> None:
    tally = verdict.per_kind[sent.expect.kind]
    want = (sent.expect.samples, sent.expect.skipped)
    got = (row["samples_processed"], row["rows_skipped"])
    stored, distinct = counts.get(row["id"], (0, 0))
    if row["status"] != "completed" or got != want or stored != sent.expect.samples:
        tally["wrong"] += 1
        verdict.violations.append(
            f"{sent.name} {row['id']}: {row['status']} {got} stored {stored}, want {want}"
            f" ({row['error_message']})"
        )
        return
    tally["completed exact"] += 1
    if distinct != stored:
        verdict.bad("duplicate sample_index", f"{sent.name} {row['id']}: {stored} rows, {distinct} distinct")
    logged = await conn.fetch(
        "SELECT batch_number, samples_in_batch FROM streaming_processing_logs"
        " WHERE file_id = $1 AND run = $2 ORDER BY batch_number",
        row["id"],
        row["run"],
    )
    numbers = [r["batch_number"] for r in logged]
    total = sum(r["samples_in_batch"] for r in logged)
    if numbers != list(range(1, row["batch_number"] + 1)) or total != sent.expect.samples:
        verdict.bad(
            "batch log holes",
            f"{sent.name} {row['id']}: batches {len(numbers)} of {row['batch_number']}, {total} samples",
        )


def _check_seen(user: User, sent: Sent, job: asyncpg.Record, verdict: Verdict) -> None:
    seen = user.seen.get(str(job["id"]))
    if seen is None or seen.statuses[-1] != job["status"]:
        last = seen.statuses[-1] if seen else "nothing"
        verdict.bad("SSE missed final state", f"{sent.name} {job['id']}: saw {last}, is {job['status']}")
        return
    ups = all(b >= a for a, b in zip(seen.samples, seen.samples[1:], strict=False))
    ups &= all(b >= a - 1e-9 for a, b in zip(seen.percents, seen.percents[1:], strict=False))
    if not ups:
        verdict.bad("SSE backwards", f"{sent.name} {job['id']}: {seen.samples[-8:]}")
