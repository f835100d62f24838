"""Upload storage behind one interface: a local directory or an S3-compatible bucket.

The S3 store's module (aiobotocore: ~0.5 s to import) is imported only where one is used,
so a service on local storage starts that much sooner (every test's stack starts three).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeGuard
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

if TYPE_CHECKING:
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
    "is_s3",
    "open_any",
    "open_storage",
]


def __getattr__(name: str) -> Any:
    """`storage.S3Storage`, imported on first use."""
    if name == "S3Storage":
        from imuflow.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_s3(store: object) -> TypeGuard[S3Storage]:
    """Whether `store` is an S3Storage (without importing the S3 client to find out: an
    S3Storage exists only once its module is imported)."""
    s3 = sys.modules.get("imuflow.storage.s3")
    return s3 is not None and isinstance(store, s3.S3Storage)


def open_storage(settings: Settings) -> Storage:
    """The store `IMUFLOW_STORAGE_URL` names (default: `DATA_DIR/uploads`)."""
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.data_dir / "uploads")
    scheme = urlparse(url).scheme
    if scheme == "file":
        return LocalStorage(Path(unquote(urlparse(url).path)))
    if scheme == "s3":
        from imuflow.storage.s3 import S3Storage

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
