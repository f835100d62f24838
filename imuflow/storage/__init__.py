"""Upload storage behind one interface: a local directory or an S3-compatible bucket."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

from imuflow.settings import Settings
from imuflow.storage.base import (
    ObjectMissing,
    ObjectWriter,
    PartialState,
    PartialWriter,
    Storage,
    StorageError,
    is_file_id,
)
from imuflow.storage.local import LocalStorage
from imuflow.storage.s3 import S3Storage

__all__ = [
    "LocalStorage",
    "ObjectMissing",
    "ObjectWriter",
    "PartialState",
    "PartialWriter",
    "S3Storage",
    "Storage",
    "StorageError",
    "close_process",
    "delete_any",
    "for_process",
    "is_file_id",
    "open_any",
    "open_storage",
]


def open_storage(settings: Settings) -> Storage:
    """The store `IMUFLOW_STORAGE_URL` names (default: `DATA_DIR/uploads`)."""
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.data_dir / "uploads")
    scheme = urlparse(url).scheme
    if scheme == "file":
        return LocalStorage(Path(unquote(urlparse(url).path)))
    if scheme == "s3":
        return S3Storage(
            url,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            spool_dir=settings.data_dir / "spool",
        )
    raise StorageError(f"IMUFLOW_STORAGE_URL must be file:///absolute/path or s3://bucket[/prefix]: {url!r}")


_PROCESS: dict[str, Storage] = {}


def for_process(settings: Settings) -> Storage:
    """One store per process and storage URL, created on first use (the parser's jobs share it)."""
    key = settings.storage_url or str(settings.storage_dir)
    if key not in _PROCESS:
        _PROCESS[key] = open_storage(settings)
    return _PROCESS[key]


async def close_process() -> None:
    """Close the stores `for_process` opened (at the process's shutdown)."""
    while _PROCESS:
        _, store = _PROCESS.popitem()
        await store.close()


async def open_any(storage: Storage, uri: str) -> BinaryIO:
    """Open `uri` through `storage`, or as a local file (an upload stored before a switch to S3)."""
    if storage.owns(uri):
        return await storage.open(uri)
    if urlparse(uri).scheme == "file":
        return await LocalStorage(Path(unquote(urlparse(uri).path)).parent).open(uri)
    raise StorageError(f"{uri} is not in the configured storage ({storage.url}); set IMUFLOW_STORAGE_URL")


async def delete_any(storage: Storage, uris: list[str]) -> None:
    """Delete through `storage`; local files left from before a switch to S3 are removed too."""
    await storage.delete([u for u in uris if storage.owns(u)])
    local = [u for u in uris if not storage.owns(u) and urlparse(u).scheme == "file"]
    if local:
        await LocalStorage(Path("/")).delete(local)
