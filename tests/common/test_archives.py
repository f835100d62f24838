"""ZIP bounds shared by ingest and the .gt3x reader: directory claims, sizes, inflate ratios."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest

from imuflow.archives import (
    RATIO_FREE_BYTES,
    ArchiveRefused,
    BoundedMember,
    check_directory,
    check_member,
    read_directory,
)


def small_zip(members: int = 3, *, zip64: bool = False) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(members):
            with zf.open(f"m{i}.csv", "w", force_zip64=zip64) as fh:
                fh.write(b"t,ax\n1,2\n")
    data = out.getvalue()
    if zip64:  # force a zip64 end record as well (Python writes one only past 65535 entries)
        data = with_zip64_end(data)
    return data


def with_zip64_end(data: bytes, entries: int | None = None, size: int | None = None) -> bytes:
    """`data` with its end record replaced by zip64 records (optionally claiming more)."""
    at = data.rfind(b"PK\x05\x06")
    _, _, _, _, n, cd_size, cd_offset, _ = struct.unpack_from("<4s4H2LH", data, at)
    body = data[:at]
    record_at = len(body)
    eocd64 = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries or n, entries or n, size or cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    eocd = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + eocd64 + locator + eocd


def claiming(data: bytes, entries: int, size: int) -> bytes:
    """`data` whose end-of-central-directory record claims other counts and sizes."""
    at = data.rfind(b"PK\x05\x06")
    fields = list(struct.unpack_from("<4s4H2LH", data, at))
    fields[3], fields[4], fields[5] = min(entries, 0xFFFF), min(entries, 0xFFFF), size
    return data[:at] + struct.pack("<4s4H2LH", *fields) + data[at + 22 :]


def test_directory_read_from_the_end_record() -> None:
    data = small_zip(3)
    d = read_directory(io.BytesIO(data))
    assert d is not None and d.entries == 3 and 0 < d.size < 500
    assert read_directory(io.BytesIO(b"not a zip")) is None


def test_zip64_end_record_is_followed() -> None:
    data = small_zip(2, zip64=True)
    assert zipfile.ZipFile(io.BytesIO(data)).namelist() == ["m0.csv", "m1.csv"]  # still a valid ZIP
    d = read_directory(io.BytesIO(data))
    assert d is not None and d.entries == 2
    huge = with_zip64_end(small_zip(2), entries=10**12, size=10**12)
    with pytest.raises(ArchiveRefused, match="1,000,000,000,000 members") as err:
        check_directory(io.BytesIO(huge), 2000, 1 << 20)
    assert err.value.kind == "directory"


def test_directory_claims_beyond_the_limits_are_refused_before_zipfile() -> None:
    data = small_zip(3)
    with pytest.raises(ArchiveRefused, match="65,535 members"):
        check_directory(io.BytesIO(claiming(data, 65_535, 100)), 2000, 1 << 20)
    with pytest.raises(ArchiveRefused, match=r"directory is 4,096\.0 MiB"):
        check_directory(io.BytesIO(claiming(data, 3, 0xFFFFFFFE)), 2000, 1 << 20)
    f = io.BytesIO(data)
    assert check_directory(f, 2000, 1 << 20) is not None and f.tell() == 0


def test_member_headers_checked_for_size_and_ratio() -> None:
    check_member("a.csv", 10 * RATIO_FREE_BYTES, RATIO_FREE_BYTES, 1 << 30, 100)  # 10:1 is fine
    check_member("tiny", RATIO_FREE_BYTES, 10, 1 << 30, 100)  # the first MiB is always allowed
    with pytest.raises(ArchiveRefused, match=r"more than the 1\.0 MiB") as err:
        check_member("a.csv", 2 << 20, 1 << 20, 1 << 20, 100)
    assert err.value.kind == "size"
    with pytest.raises(ArchiveRefused, match="inflates 250:1") as err:
        check_member("log.bin", 250 << 20, 1 << 20, 1 << 30, 100)
    assert err.value.kind == "ratio"


def test_inflated_bytes_are_counted_while_streaming() -> None:
    """What the header declares is checked first; this is the count behind it (headers lie)."""
    inflated = bytes(50 << 20)  # 50 MiB of zeros: ~50 KiB deflated, ratio ~1000
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("Accelerometer.csv", inflated)
    with zipfile.ZipFile(out) as zf:
        info = zf.infolist()[0]
        member = BoundedMember(zf.open(info), "Accelerometer.csv", info.compress_size, 1 << 30, 100)
        with pytest.raises(ArchiveRefused, match="inflates") as err:
            while member.read(1 << 20):
                pass
    assert err.value.kind == "ratio"
    assert member.inflated <= max(RATIO_FREE_BYTES, info.compress_size * 100) + 1
    with zipfile.ZipFile(out) as zf:
        info = zf.infolist()[0]
        member = BoundedMember(zf.open(info), "Accelerometer.csv", info.compress_size, 3 << 20, 10_000)
        with pytest.raises(ArchiveRefused, match=r"more than the 3\.0 MiB") as err:
            while member.read(1 << 20):
                pass
    assert err.value.kind == "size"
