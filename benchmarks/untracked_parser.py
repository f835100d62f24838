"""The parser with progress tracking off: for the benchmarks that measure what tracking costs.

`python -m benchmarks.untracked_parser` runs `imuflow parser` with one thing swapped: its
repository stores each batch's samples (and preview rows) alone, without the resume
checkpoint, the batch log row and the outbox progress event. The switch lives here, not
in the production parser (issue 21): production has no way to turn tracking off. The
job's ParseStarted and ParseCompleted events are still sent (two per file, not per batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from imuflow import dberrors
from imuflow.runner import run_worker
from imuflow.settings import load_settings
from services.parser.cursor import Cursor
from services.parser.formats.base import SampleBatch
from services.parser.main import serve
from services.parser.repository import Claim, ParserRepository, TransientError


class UntrackedRepository(ParserRepository):
    """Stores a batch's samples without its checkpoint or progress event."""

    async def store_batch(
        self,
        claim: Claim,
        batch: SampleBatch,
        cursor: Cursor,
        *,
        progress: Callable[[], dict[str, Any]] | None = None,
        payload: Sequence[memoryview] | None = None,
        preview: list[tuple[Any, ...]] | None = None,
    ) -> None:
        """The samples and preview rows in one transaction; `cursor` and `progress` unused."""
        with dberrors.translated(TransientError, "store batch"):
            async with self.pool.acquire() as conn, conn.transaction():
                await self.copy_samples(conn, claim, batch, payload, preview)


def main() -> None:
    """Process entry point (the environment configures it as it does `imuflow parser`)."""
    settings = load_settings(None)
    run_worker("parser", settings, lambda stop: serve(settings, stop, repository=UntrackedRepository))


if __name__ == "__main__":
    main()
