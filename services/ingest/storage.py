"""Where uploads live: one file per upload under the data dir, named by its id only.

The user's filename is never part of a path; it is kept for display after sanitising.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from uuid import UUID

MAX_FILENAME = 200
_UNSAFE = re.compile(r"[\x00-\x1f\x7f<>:\"|?*]")


def sanitize_filename(raw: str | None) -> str:
    """A display name: last path component, no control or shell-hostile characters."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:20] if dot else ""
        name = (stem if dot else name)[: MAX_FILENAME - len(ext) - 1] + (f".{ext}" if ext else "")
    return name or "upload"


class UploadSink:
    """Writes one upload to `<dir>/<id>.part`, hashing and counting as it goes."""

    def __init__(self, directory: Path, file_id: UUID, max_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.final_path = directory / str(file_id)
        self.part_path = directory / f"{file_id}.part"
        self.max_bytes = max_bytes
        self.size = 0
        self.too_large = False
        self.first_bytes = b""
        self._sha = hashlib.sha256()
        self._file = open(self.part_path, "wb")  # noqa: SIM115 - closed in finish/discard

    def write(self, chunk: bytes) -> None:
        """Append a chunk, unless the upload already exceeded the limit."""
        if self.too_large:
            return
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.too_large = True
            return
        if len(self.first_bytes) < 4096:
            self.first_bytes += chunk[: 4096 - len(self.first_bytes)]
        self._sha.update(chunk)
        self._file.write(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def finish(self) -> Path:
        """Make the upload durable and visible under its final name."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.part_path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        """Remove whatever was written (failed, rejected or duplicate upload)."""
        if not self._file.closed:
            self._file.close()
        for path in (self.part_path, self.final_path):
            path.unlink(missing_ok=True)
