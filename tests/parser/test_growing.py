"""The reader of an upload still being received (services/parser/growing.py)."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from services.parser.growing import UploadEnd, UploadPaused, UploadStopped, open_growing


def _append(path: Path, data: bytes, pieces: int, then: UploadEnd | None, rename: bool = False) -> None:
    step = -(-len(data) // pieces)
    with path.open("ab") as f:
        for start in range(0, len(data), step):
            f.write(data[start : start + step])
            f.flush()
            time.sleep(0.005)
    if rename:
        os.replace(path, path.with_name(path.name.removesuffix(".part")))
    if then is not None:
        then.finish(len(data))


def test_reads_every_byte_while_the_file_grows_and_stops_at_the_real_end(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    final = tmp_path / "f1"
    part = tmp_path / "f1.part"
    part.write_bytes(b"")
    end = UploadEnd()
    f = open_growing(final, estimate=400_000, end=end)
    assert f is not None
    assert f.seek(0, io.SEEK_END) == 400_000  # the declared estimate until the end is known
    f.seek(0)
    writer = threading.Thread(target=_append, args=(part, data, 40, end, True))
    writer.start()
    got = bytearray()
    buf = bytearray(7_000)
    while n := f.readinto(buf):
        got += buf[:n]
    writer.join()
    assert bytes(got) == data
    assert f.seek(0, io.SEEK_END) == len(data)
    f.close()


def test_read_waits_for_the_whole_count(tmp_path: Path) -> None:
    part = tmp_path / "f2.part"
    part.write_bytes(b"")
    end = UploadEnd()
    f = open_growing(tmp_path / "f2", estimate=10_000, end=end)
    assert f is not None
    writer = threading.Thread(target=_append, args=(part, b"x" * 5_000, 10, None))
    writer.start()
    assert f.read(4_000) == b"x" * 4_000  # not a short read of what was there first
    writer.join()
    end.finish(5_000)
    assert f.read() == b"x" * 1_000
    assert f.read(10) == b""


def test_a_stopped_upload_ends_a_waiting_read(tmp_path: Path) -> None:
    part = tmp_path / "f3.part"
    part.write_bytes(b"abc")
    end = UploadEnd()
    f = open_growing(tmp_path / "f3", estimate=1_000, end=end)
    assert f is not None
    assert f.read(3) == b"abc"
    threading.Timer(0.1, end.stop, args=("the upload stopped after 3 of about 1,000 bytes",)).start()
    with pytest.raises(UploadStopped, match="stopped after 3"):
        f.read(1)


def test_a_finished_upload_shorter_than_its_record_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "f4").write_bytes(b"abc")  # renamed already: opened under its final name
    end = UploadEnd()
    end.finish(10)
    f = open_growing(tmp_path / "f4", estimate=10, end=end)
    assert f is not None
    with pytest.raises(UploadStopped, match="holds 3 bytes, not 10"):
        f.read(10)


def test_neither_name_exists(tmp_path: Path) -> None:
    assert open_growing(tmp_path / "gone", estimate=10, end=UploadEnd()) is None


def test_a_tus_partial_file_is_read_and_no_byte_for_a_while_is_a_pause(tmp_path: Path) -> None:
    (tmp_path / "f5.tus").write_bytes(b"time,ax\n0.0,1\n")
    f = open_growing(tmp_path / "f5", estimate=1_000, end=UploadEnd(), pause_after=0.2)
    assert f is not None
    assert f.read(14) == b"time,ax\n0.0,1\n"
    started = time.monotonic()
    with pytest.raises(UploadPaused, match=r"no byte for 0\.2 s at 14"):
        f.read(1)
    assert 0.2 <= time.monotonic() - started < 2.0
    f.close()


def test_bytes_that_keep_coming_are_no_pause(tmp_path: Path) -> None:
    path = tmp_path / "f6.tus"
    path.write_bytes(b"")
    data = os.urandom(20_000)
    end = UploadEnd()
    f = open_growing(tmp_path / "f6", estimate=len(data), end=end, pause_after=0.3)
    assert f is not None

    def slowly() -> None:  # a piece every 0.1 s: 1 s in all, never 0.3 s without a byte
        for start in range(0, len(data), 2_000):
            with path.open("ab") as out:
                out.write(data[start : start + 2_000])
            time.sleep(0.1)
        end.finish(len(data))

    writer = threading.Thread(target=slowly)
    writer.start()
    assert f.read() == data
    writer.join()
    f.close()
