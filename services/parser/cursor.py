"""Where a parse stands: its last committed batch and the totals up to it.

A job starts from its claim's checkpoint and moves the cursor on once per batch; the
batch's transaction writes the moved cursor as the new checkpoint (resume point, exact
count, rows skipped, warnings) and its progress event reads from it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from imuflow.filewarnings import merge
from services.parser.formats.base import SampleBatch


@dataclass(frozen=True)
class Cursor:
    """The position after batch `batch_number` (0: nothing committed yet this run)."""

    batch_number: int
    samples_done: int
    rows_skipped: int
    warnings: list[str]
    offset: int = 0  # byte offset after the batch: where a resume reads on
    # perf_counter() when the previous batch committed: a batch's time runs from it
    since: float = field(default_factory=time.perf_counter)

    def after(self, batch: SampleBatch) -> Cursor:
        """The position once `batch` is committed too (its time still running)."""
        return Cursor(
            batch_number=self.batch_number + 1,
            samples_done=self.samples_done + len(batch),
            rows_skipped=self.rows_skipped + batch.rows_skipped,
            warnings=merge(self.warnings, batch.warnings),
            offset=batch.end_offset,
            since=self.since,
        )
