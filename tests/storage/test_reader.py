"""RangedReader: block reads with one block of read-ahead, any seek, bounded memory."""

from __future__ import annotations

import asyncio
import os
import zipfile
from concurrent.futures import Future
from io import BytesIO

import pytest

from imuflow.storage.reader import RangedReader
from tests.objectstore import S3Server

DATA = os.urandom(10 * 1000 + 17)


class Recording:
    """A fetch that answers at once and remembers each range asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> Future[bytes]:
        self.ranges.append((start, end))
        future: Future[bytes] = Future()
        future.set_result(self.data[start:end])
        return future


def test_sequential_reads_fetch_each_block_once_and_the_next_ahead() -> None:
    fetch = Recording(DATA)
    reader = RangedReader(fetch, len(DATA), block=1000)
    assert reader.read(10) == DATA[:10]
    assert fetch.ranges == [(0, 1000), (1000, 2000)]  # the next block is already asked for
    out = DATA[:10] + b"".join(iter(lambda: reader.read(333), b""))
    assert out == DATA
    assert fetch.ranges == [(i * 1000, min(len(DATA), i * 1000 + 1000)) for i in range(11)]
    assert len(reader._blocks) <= 2  # memory: this block and the next


def test_seeks_fetch_only_what_they_touch() -> None:
    fetch = Recording(DATA)
    reader = RangedReader(fetch, len(DATA), block=1000)
    reader.seek(-22, os.SEEK_END)  # a ZIP's end-of-directory record
    assert reader.read(22) == DATA[-22:]
    reader.seek(4500)
    assert reader.read(1000) == DATA[4500:5500]
    assert reader.tell() == 5500
    assert (0, 1000) not in fetch.ranges
    assert reader.read(10**9) == DATA[5500:]


def test_zipfile_reads_an_archive_through_it() -> None:
    raw = BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.csv", b"t,ax\n" * 5000)
        zf.writestr("b.bin", DATA)
    blob = raw.getvalue()
    reader = RangedReader(Recording(blob), len(blob), block=4096)
    with zipfile.ZipFile(reader) as zf:
        assert zf.read("b.bin") == DATA and zf.read("a.csv") == b"t,ax\n" * 5000


async def test_reading_an_s3_object_on_the_event_loop_is_refused(s3_server: S3Server, s3_prefix: str) -> None:
    store = s3_server.storage(s3_prefix)
    try:
        writer = await store.create("00000000-0000-0000-0000-000000000001")
        await writer.write(b"abc")
        await writer.commit()
        f = await store.open(store.uri("00000000-0000-0000-0000-000000000001"))
        with pytest.raises(RuntimeError, match="worker thread"):
            f.read(1)  # it would wait on this very loop
        assert await asyncio.to_thread(f.read) == b"abc"
        await store.delete([store.uri("00000000-0000-0000-0000-000000000001")])
    finally:
        await store.close()
