"""Open a job's stored upload; one still being received is read growing, followed, given back.

The parser reads such an upload while it grows (services/parser/growing.py). A task of the
job reads the record every 0.1 s and tells the reader the real size once ingest finished
the upload, or that it stopped (failed, removed, taken away). The job gives its slot back
(`release`, queued with `upload_parked` set, the next claim counting no attempt) when the
reader must wait for the whole file (a binary format: its reader sizes the file first) or
when no byte came for `IMUFLOW_UPLOAD_PAUSE_YIELD` seconds (a paused resumable upload);
ingest queues it again, once, at the next bytes (paused) or at the upload's end (both).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import BinaryIO, Literal, cast
from urllib.parse import urlparse

from imuflow import storage
from imuflow.logs import fields
from imuflow.settings import Settings
from imuflow.storage.local import path_of
from imuflow.storage.segments import SegmentReader
from services.parser.formats import registry
from services.parser.formats.base import FormatError
from services.parser.growing import GrowingFile, UploadEnd, open_growing
from services.parser.repository import Claim, ParserRepository, TransientError
from services.parser.threads import JobThread

log = logging.getLogger("imuflow.parser")
GROWING = (GrowingFile, SegmentReader)  # readers of an upload still being received
FOLLOW_EVERY = 0.1  # seconds between looks at the record of an upload still being received
SNIFF_BYTES = 4096  # what the binary formats' sniffers look at (cwa's header, GENEActiv's text)
MISSING_UPLOAD = "the stored upload is missing; upload the file again"
Parked = Literal["paused", "binary"]


class NotWhileReceiving(Exception):
    """A binary format's upload is still streaming: its reader needs the whole file."""


async def open_upload(settings: Settings, thread: JobThread, claim: Claim, end: UploadEnd) -> BinaryIO:
    """The stored upload, seekable: a local file (still growing, if it is being received),
    or ranged GETs with read-ahead on S3."""
    if urlparse(claim.storage_uri).scheme == "file":
        path = path_of(claim.storage_uri)
        if claim.upload_receiving:
            pause = settings.upload_pause_yield
            growing = await thread.submit(open_growing, path, claim.size_bytes, end, pause)
            if growing is None:
                raise FormatError(MISSING_UPLOAD)
            return cast(BinaryIO, growing)  # a raw file object, like the S3 reader
        # Even a stat blocks on a stalled filesystem: in the job's thread, not the loop.
        if not await thread.submit(_is_stored, path):
            raise FormatError(MISSING_UPLOAD)
        f: BinaryIO = await thread.submit(open, path, "rb")
        return f
    store = storage.for_process(settings)
    try:
        if claim.upload_receiving and storage.is_s3(store) and store.owns(claim.storage_uri):
            return await store.open_growing(claim.storage_uri, claim.size_bytes, end)  # its segments
        return await storage.open_any(store, claim.storage_uri)
    except storage.ObjectMissing as exc:
        raise FormatError(MISSING_UPLOAD) from exc
    except storage.StorageError as exc:
        raise TransientError(f"upload storage: {exc}") from exc


def _is_stored(path: Path) -> bool:
    # Not `is_file()`: only a missing upload (or a directory) is the user's to fix; any
    # other file is read, and a read that blocks is the job's timer's business.
    return path.exists() and not path.is_dir()


async def follow(repo: ParserRepository, claim: Claim, end: UploadEnd) -> None:
    """Until its upload is finished: tell the reader its real size, or that it stopped."""
    while True:
        try:
            state = await repo.status_of(claim.file_id)
        except TransientError:
            state = {"status": "parsing", "lease": claim.lease, "upload_receiving": True}
        if state is None or state["status"] != "parsing" or state["lease"] != claim.lease:
            end.stop("the upload's record changed while it was being received")
            return
        if not state["upload_receiving"]:
            end.finish(state["size_bytes"])
            return
        await asyncio.sleep(FOLLOW_EVERY)


def binary_upload(f: BinaryIO, claim: Claim) -> bool:
    """Whether the upload is of a binary format, from its first bytes (the whole head a text
    sniff reads may be far ahead of a streaming upload)."""
    if claim.format is not None:
        return claim.format in registry.BINARY_READERS
    head = f.read(SNIFF_BYTES)
    f.seek(0)
    return any(binary.sniff(head, claim.filename) for binary in registry.BINARY_READERS.values())


async def release(repo: ParserRepository, claim: Claim, parked: Parked) -> bool:
    """Give the job back until ingest queues it again; False if the upload ended meanwhile."""
    if not await repo.release_receiving(claim, parked):
        return False
    why = "upload paused" if parked == "paused" else "binary upload still streaming"
    log.info("%s; job given back until ingest queues it again", why, extra=fields(action="release"))
    return True
