"""Uploads as files in one local directory (`file:///absolute/path`), named by file id."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from imuflow.logs import fields
from imuflow.storage.base import ObjectMissing, PartialState, StorageError, is_file_id

log = logging.getLogger("imuflow.storage")


def path_of(uri: str) -> Path:
    """The local path of a `file://` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise StorageError(f"not a local storage URI: {uri!r}")
    return Path(unquote(parsed.path))


class LocalWriter:
    """Writes `<dir>/<key>.part`; `commit` fsyncs and renames it to `<dir>/<key>`."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(f"{final.name}.part")
        self._file: BinaryIO | None = open(self.part, "wb")  # noqa: SIM115 - closed in commit/abort

    async def write(self, data: bytes) -> None:
        """Append bytes (page cache: fast enough to do on the loop, as before)."""
        if self._file is None:
            raise StorageError("write after commit or abort")
        self._file.write(data)

    async def commit(self) -> None:
        """fsync, then make the file visible under its final name."""
        f, self._file = self._file, None
        if f is None:
            raise StorageError("commit after abort")

        def finish() -> None:
            with f:
                f.flush()
                os.fsync(f.fileno())
            os.replace(self.part, self.final)

        await asyncio.to_thread(finish)

    async def abort(self) -> None:
        """Remove the partial file."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self.part.unlink(missing_ok=True)


CHECKPOINT_BYTES = 8 * 1024 * 1024  # fsync and record progress this often within one request


class LocalPartialWriter:
    """Appends to `<dir>/<key>.tus`, cut back first to the recorded offset.

    A killed ingest may have written bytes past the offset Postgres knows; they are
    dropped here, so the file always holds exactly the acknowledged bytes.
    """

    def __init__(self, path: Path, state: PartialState, file: BinaryIO) -> None:
        self.path = path
        self.state = PartialState(offset=state.offset)
        self._file: BinaryIO | None = file
        self._written = state.offset
        self._unsynced = 0

    @classmethod
    def open(cls, path: Path, state: PartialState) -> LocalPartialWriter:
        """Open (or create, at offset 0) the partial file and cut it to `state.offset`."""
        file: BinaryIO
        if state.offset == 0:
            file = open(path, "wb")  # noqa: SIM115 - closed in close()
        else:
            try:
                file = open(path, "r+b")  # noqa: SIM115 - closed in close()
            except FileNotFoundError as exc:
                raise ObjectMissing(f"the partial upload {path.name} is gone") from exc
            size = os.fstat(file.fileno()).st_size
            if size < state.offset:
                file.close()
                raise ObjectMissing(f"the partial upload {path.name} is shorter than its offset")
            file.truncate(state.offset)
            file.seek(state.offset)
        return cls(path, state, file)

    async def write(self, data: bytes) -> None:
        """Append (page cache; fsync at checkpoints)."""
        if self._file is None:
            raise StorageError("write after close")
        self._file.write(data)
        self._written += len(data)
        self._unsynced += len(data)

    def due(self) -> bool:
        """True once CHECKPOINT_BYTES were written since the last fsync."""
        return self._unsynced >= CHECKPOINT_BYTES

    async def checkpoint(self) -> PartialState:
        """fsync; everything written is now the offset."""
        f = self._file
        if f is None:
            raise StorageError("checkpoint after close")

        def sync() -> None:
            f.flush()
            os.fsync(f.fileno())

        await asyncio.to_thread(sync)
        self._unsynced = 0
        self.state = PartialState(offset=self._written)
        return self.state

    async def complete(self) -> str:
        """fsync and rename to the final name."""
        await self.checkpoint()
        await self.close()
        final = self.path.with_name(self.path.name.removesuffix(".tus"))
        await asyncio.to_thread(os.replace, self.path, final)
        return final.as_uri()

    async def close(self) -> None:
        """Close the file (bytes past the recorded offset are cut at the next resume)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class LocalStorage:
    """A directory of uploads (the embedded default: `DATA_DIR/uploads`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.url = self.directory.as_uri()

    def uri(self, key: str) -> str:
        """`file:///dir/<key>`."""
        return (self.directory / key).as_uri()

    def owns(self, uri: str) -> bool:
        """Any `file://` URI: a local file is readable wherever it is."""
        return urlparse(uri).scheme == "file"

    async def create(self, key: str) -> LocalWriter:
        """Start writing `<dir>/<key>`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return LocalWriter(self.directory / key)

    async def open(self, uri: str) -> BinaryIO:
        """The file, opened for reading."""
        try:
            return await asyncio.to_thread(open, path_of(uri), "rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(uri) from exc

    async def exists(self, uri: str) -> bool:
        """True when the file exists."""
        return path_of(uri).is_file()

    async def delete(self, uris: list[str]) -> None:
        """Remove the files; only names that are file ids (never a user's name)."""
        for uri in uris:
            path = path_of(uri) if self.owns(uri) else None
            if path is None or not is_file_id(path.name):
                log.warning("not removing an unexpected location", extra=fields(uri=uri, action="delete"))
                continue
            path.unlink(missing_ok=True)

    async def resume(self, key: str, state: PartialState) -> LocalPartialWriter:
        """Append to `<dir>/<key>.tus` from `state.offset`."""
        if not is_file_id(key):
            raise StorageError(f"not a file id: {key!r}")
        self.directory.mkdir(parents=True, exist_ok=True)
        return await asyncio.to_thread(LocalPartialWriter.open, self.directory / f"{key}.tus", state)

    async def abort_partial(self, key: str, state: PartialState) -> None:
        """Remove `<dir>/<key>.tus`."""
        if is_file_id(key):
            (self.directory / f"{key}.tus").unlink(missing_ok=True)

    async def sweep(self, older_than: float, keep: frozenset[str] = frozenset()) -> int:
        """Remove `<id>.part` files not written to for `older_than` seconds (tus `.tus`
        files are the expiry sweeper's: their age is in Postgres)."""
        if not self.directory.is_dir():
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for path in self.directory.glob("*.part"):
            if is_file_id(path.name.removesuffix(".part")) and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    async def check(self) -> str | None:
        """None when the directory exists or can be created, and is writable."""
        # In a thread: a hung network filesystem must not block the event loop.
        return await asyncio.to_thread(self._probe)

    def _probe(self) -> str | None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"storage: {exc}"
        return None if os.access(self.directory, os.W_OK) else f"storage: {self.directory} is not writable"

    async def close(self) -> None:
        """Nothing to release."""
