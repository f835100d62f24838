"""Faults at random: SIGKILL a service, the broker or Postgres of a running `imuflow up`.

Services and the broker are brought back by `imuflow up` itself (that is under test);
Postgres is restarted here after a short outage. Every kill is logged with its time.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from benchmarks.soak.stack import SERVICES, UpStack, kill

TARGETS = (*SERVICES, "broker", "postgres")


@dataclass
class Chaos:
    """Kills one target of `targets` every ~`every` seconds until stopped."""

    stack: UpStack
    targets: tuple[str, ...]
    every: float
    rng: random.Random
    kills: Counter[str] = field(default_factory=Counter)
    missed: Counter[str] = field(default_factory=Counter)  # chosen but not running then
    log: list[tuple[float, str]] = field(default_factory=list)

    async def run(self, until: float) -> None:
        """Inject faults until `until` (monotonic)."""
        while True:
            pause = self.rng.uniform(0.5, 1.5) * self.every
            if time.monotonic() + pause > until:
                return
            await asyncio.sleep(pause)
            await self.strike(self.rng.choice(self.targets))

    async def strike(self, target: str) -> None:
        """SIGKILL `target` (Postgres: the postmaster and every backend, then restart it)."""
        if target == "postgres":
            procs = self.stack.postgres()
        elif target == "broker":
            found = self.stack.broker()
            procs = [found] if found else []
        else:
            found = self.stack.service(target)
            procs = [found] if found else []
        if not kill(procs):
            self.missed[target] += 1
            return
        self.kills[target] += 1
        self.log.append((time.time(), target))
        if target == "postgres":
            await asyncio.sleep(self.rng.uniform(1.0, 5.0))
            await self.stack.restart_postgres()
