"""Bounds for ZIP containers, shared by ingest (phone-app exports) and the parser (.gt3x).

Python's `zipfile` trusts an archive: it reads the whole central directory into memory
and builds one object per entry before a caller can count them, and it inflates whatever
a member's header promises. So before `zipfile` sees a file, `check_directory` reads the
end-of-central-directory record (zip64 included) and refuses an archive whose directory
claims more entries or bytes than we accept; and members are read through
`BoundedMember`, which refuses them by their header (`check_member`) and counts what they
really inflate to, because headers can lie.

A member may inflate to at most `max_ratio` times its compressed size (ZIP bombs
inflate by a thousand or more; real IMU data by 2-20), except that the first
`RATIO_FREE_BYTES` of any member are always allowed: a tiny, very compressible member
(an empty log, a header file of zeros) is no threat.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import IO, BinaryIO

RATIO_FREE_BYTES = 1 << 20
# signature, disk, cd disk, entries here, entries, cd size, cd offset, comment length
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_LOC64 = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 record, disks
_LOC64_SIG = b"PK\x06\x07"
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries here, entries, size, offset
_EOCD64_SIG = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF


class ArchiveRefused(Exception):
    """The archive exceeds a limit; `str()` is the reason shown to the user.

    `kind` is "size" (unpacks to too much), "ratio" (inflates too much) or "directory".
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Directory:
    """What the end-of-central-directory record says about the central directory."""

    entries: int
    size: int
    offset: int


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def read_directory(f: BinaryIO) -> Directory | None:
    """The central directory's entry count, size and offset; None if no EOCD is found."""
    end = f.seek(0, 2)
    tail_start = max(0, end - _EOCD.size - _MAX_COMMENT)
    f.seek(tail_start)
    tail = f.read(end - tail_start)
    # As zipfile does: the record without a comment first, else the last signature.
    at = len(tail) - _EOCD.size
    if at < 0:
        return None
    if tail[at : at + 4] != _EOCD_SIG:
        at = tail.rfind(_EOCD_SIG)
        if at < 0 or at + _EOCD.size > len(tail):
            return None
    _, _, _, _, entries, size, offset, _ = _EOCD.unpack_from(tail, at)
    if entries == 0xFFFF or size == 0xFFFFFFFF or offset == 0xFFFFFFFF:
        zip64 = _read_zip64(f, tail_start + at)
        if zip64 is not None:
            return zip64
    return Directory(entries, size, offset)


def _read_zip64(f: BinaryIO, eocd_at: int) -> Directory | None:
    if eocd_at < _LOC64.size:
        return None
    f.seek(eocd_at - _LOC64.size)
    sig, _, record_at, _ = _LOC64.unpack(f.read(_LOC64.size))
    if sig != _LOC64_SIG:
        return None
    # zipfile looks for the zip64 record just before the locator, whatever the offset says.
    f.seek(eocd_at - _LOC64.size - _EOCD64.size)
    raw = f.read(_EOCD64.size)
    if len(raw) != _EOCD64.size or raw[:4] != _EOCD64_SIG:
        f.seek(record_at)
        raw = f.read(_EOCD64.size)
        if len(raw) != _EOCD64.size or raw[:4] != _EOCD64_SIG:
            return None
    fields = _EOCD64.unpack(raw)
    return Directory(entries=fields[7], size=fields[8], offset=fields[9])


def check_directory(f: BinaryIO, max_entries: int, max_bytes: int) -> Directory | None:
    """Refuse an archive whose directory claims too many entries or bytes (ArchiveRefused).

    None when the file has no end-of-central-directory record (zipfile then says why).
    The file position is left at 0.
    """
    try:
        directory = read_directory(f)
    finally:
        f.seek(0)
    if directory is None:
        return None
    if directory.entries > max_entries:
        raise ArchiveRefused(
            "directory",
            f"the ZIP's directory lists {directory.entries:,} members; at most {max_entries:,} are accepted",
        )
    if directory.size > max_bytes:
        raise ArchiveRefused(
            "directory",
            f"the ZIP's directory is {_mib(directory.size)}; at most {_mib(max_bytes)} is accepted",
        )
    return directory


def member_limit(compressed: int, remaining: int, max_ratio: float) -> int:
    """The most a member of `compressed` bytes may inflate to, with `remaining` bytes of budget."""
    return min(remaining, max(RATIO_FREE_BYTES, int(compressed * max_ratio)))


def check_member(name: str, file_size: int, compress_size: int, remaining: int, max_ratio: float) -> None:
    """Refuse a member by what its header declares (ArchiveRefused)."""
    if file_size > remaining:
        raise ArchiveRefused(
            "size",
            f"{name} unpacks to {_mib(file_size)}, more than the {_mib(remaining)} this upload may hold",
        )
    if file_size > member_limit(compress_size, remaining, max_ratio):
        raise ArchiveRefused("ratio", _ratio_reason(name, file_size / max(compress_size, 1), max_ratio))


def _ratio_reason(name: str, ratio: float, max_ratio: float) -> str:
    return (
        f"{name} inflates {ratio:,.0f}:1, more than the {max_ratio:g}:1 we accept "
        "(this looks like a ZIP bomb, not a recording); export the recording again"
    )


class BoundedMember:
    """Reads an open member, counting inflated bytes against its limits as it goes."""

    def __init__(
        self, member: IO[bytes], name: str, compress_size: int, remaining: int, max_ratio: float
    ) -> None:
        self._member = member
        self._name = name
        self._compress_size = compress_size
        self._remaining = remaining
        self._ratio = max_ratio
        self._limit = member_limit(compress_size, remaining, max_ratio)
        self.inflated = 0

    def read(self, n: int) -> bytes:
        """Up to `n` bytes (no read-it-all: a member is read in chunks); ArchiveRefused past a limit."""
        if n < 0:
            raise ValueError("read a bounded member in chunks")
        data = self._member.read(min(n, self._limit + 1 - self.inflated))
        self.inflated += len(data)
        if self.inflated > self._limit:
            if self.inflated > self._remaining:
                raise ArchiveRefused(
                    "size",
                    f"{self._name} unpacks to more than the {_mib(self._remaining)} this upload may hold",
                )
            ratio = self.inflated / max(self._compress_size, 1)
            raise ArchiveRefused("ratio", _ratio_reason(self._name, ratio, self._ratio))
        return data

    def seek(self, offset: int) -> int:
        """Seek forward from the start (resuming); the bytes skipped count as inflated."""
        if offset > self._limit:
            raise ArchiveRefused("size", f"cannot seek {self._name} past its limit")
        pos = self._member.seek(offset)
        self.inflated = max(self.inflated, pos)
        return pos

    def close(self) -> None:
        """Close the member."""
        self._member.close()
