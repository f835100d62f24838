"""Chaos soak: `python -m benchmarks.soak --minutes N` (not part of the tests).

Several users upload a mix of real, damaged and hostile files to a real `imuflow up` while
the parser, progress, ingest, the broker and Postgres are SIGKILLed at random. Then the
faults stop, everything drains, and the soak checks that every ordinary file completed
with its exact count and no duplicate `sample_index`, every batch is logged, every hostile
file failed (or was refused) with a reason, no follower saw progress go backwards and
every follower saw each file's final state. It prints a table and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Table, machine, show
from benchmarks.soak.chaos import TARGETS, Chaos
from benchmarks.soak.checks import KINDS, Verdict, check
from benchmarks.soak.stack import UpStack
from benchmarks.soak.users import TERMINAL, User
from imuflow import auth, db

# Small enough that the watchdog acts within a soak, as an operator would tune a busy stack.
STACK_ENV = {
    "IMUFLOW_STUCK_AFTER": "30",
    "IMUFLOW_MAX_UPLOAD_BYTES": str(100 * 1024 * 1024),
    "IMUFLOW_MAX_CONCURRENT_UPLOADS": "16",
}


async def soak(args: argparse.Namespace) -> Verdict:
    """Run the soak; the verdict."""
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="imuflow-soak-") as tmp:
        stack = UpStack(Path(tmp) / "stack", STACK_ENV)
        began = time.time()
        await stack.start()
        try:
            users = await _users(stack, args.users)
            stop_following = asyncio.Event()
            followers = [asyncio.create_task(u.follow(stack.progress_url, stop_following)) for u in users]
            await asyncio.sleep(3)  # followers subscribed before the first upload
            until = time.monotonic() + args.minutes * 60
            chaos = Chaos(stack, tuple(args.targets), args.every, random.Random(rng.random()))
            work = [
                u.upload_until(stack.ingest_url, until, random.Random(rng.random()), args.gap) for u in users
            ]
            await asyncio.gather(chaos.run(until), *work)
            drained = await _drain(stack, users, args.drain * 60)
            await asyncio.sleep(5)  # the last events reach the followers
            stop_following.set()
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
            verdict = await check(stack.database_url, users)
        finally:
            stack.stop()
        _report(args, verdict, chaos, users, time.time() - began, drained)
        return verdict


async def _users(stack: UpStack, count: int) -> list[User]:
    conn = await db.connect(stack.database_url)
    try:
        return [User(f"soak{i}", await auth.create_token(conn, f"soak{i}")) for i in range(count)]
    finally:
        await conn.close()


async def _drain(stack: UpStack, users: list[User], within: float) -> float:
    """Wait until every job of the soak users is terminal; seconds it took (or `within`)."""
    began = time.monotonic()
    names = [u.name for u in users]
    while time.monotonic() - began < within:
        try:
            conn = await db.connect(stack.database_url)
            try:
                busy = await conn.fetchval(
                    "SELECT count(*) FROM imu_data_files f JOIN users u ON u.id = f.user_id"
                    " WHERE u.name = ANY($1::text[]) AND f.status <> ALL($2::text[])"
                    " AND (f.format IS DISTINCT FROM 'zip')",
                    names,
                    sorted(TERMINAL),
                )
            finally:
                await conn.close()
            if busy == 0:
                return time.monotonic() - began
        except (OSError, db.DatabaseError):
            pass
        await asyncio.sleep(2)
    return within


def _report(
    args: argparse.Namespace, verdict: Verdict, chaos: Chaos, users: list[User], took: float, drained: float
) -> None:
    outcomes = (
        "uploads",
        "completed exact",
        "failed with a reason",
        "refused with a reason",
        "wrong",
        "unfinished",
    )
    files = Table("Soak: what became of every upload", ["kind", *outcomes])
    for kind in KINDS:
        files.rows.append([kind, *(verdict.per_kind[kind][o] for o in outcomes)])
    files.notes.append(
        f"{args.minutes:g} min of faults, {args.users} users, seed {args.seed}; drained in {drained:.0f} s;"
        f" whole run {took / 60:.1f} min; upload retries {sum(s.retries for u in users for s in u.sent)}"
    )
    faults = Table("Soak: faults injected (SIGKILL)", ["target", "kills", "not running when chosen"])
    for target in args.targets:
        faults.rows.append([target, chaos.kills[target], chaos.missed[target]])
    checks = Table("Soak: invariants", ["check", "violations"])
    for what, n in verdict.invariants.items():
        checks.rows.append([what, n])
    checks.notes.append(f"follower reconnects: {sum(u.reconnects for u in users)}")
    show([files, faults, checks])
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine().items()))
    for line in verdict.violations[:50]:
        print("VIOLATION", line)


def main() -> None:
    """Parse the arguments and run the soak."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long faults are injected")
    parser.add_argument("--users", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--every", type=float, default=20.0, help="mean seconds between faults")
    parser.add_argument("--gap", type=float, default=6.0, help="mean seconds between one user's uploads")
    parser.add_argument("--drain", type=float, default=5.0, help="minutes allowed to finish after the faults")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    verdict = asyncio.run(soak(parser.parse_args()))
    sys.exit(1 if verdict.violations else 0)


if __name__ == "__main__":
    main()
