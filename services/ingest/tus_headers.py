"""The tus 1.0.0 protocol's headers: what ingest announces, and parsing what clients send."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from services.ingest.multipart import UploadRejected

VERSION = "1.0.0"
EXTENSIONS = "creation,creation-with-upload,termination,checksum,expiration"
CHECKSUMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "md5": hashlib.md5}
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
METADATA_KEYS = ("filename", "format", "sensor", "timezone", "allow_duplicate")
MAX_METADATA = 4096
# Headers a page on another origin sends and must be able to read (CORS).
REQUEST_HEADERS = (
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "Upload-Defer-Length",
    "Upload-Concat",
    "X-HTTP-Method-Override",
    "X-Requested-With",
)
FILE_ID_HEADER = "Imuflow-File-Id"  # the record a finished upload became (not part of tus)
EXPOSED_HEADERS = (
    "Location",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Expires",
    "Upload-Metadata",
    "Tus-Version",
    "Tus-Resumable",
    "Tus-Max-Size",
    "Tus-Extension",
    "Tus-Checksum-Algorithm",
    FILE_ID_HEADER,
)


def discovery(max_size: int) -> dict[str, str]:
    """The OPTIONS answer: what this server speaks."""
    return {
        "Tus-Resumable": VERSION,
        "Tus-Version": VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
        "Tus-Max-Size": str(max_size),
    }


def expires(at: datetime) -> str:
    """`Upload-Expires` (an HTTP date)."""
    return format_datetime(at, usegmt=True)


def check_version(value: str | None) -> None:
    """412 unless the client speaks 1.0.0."""
    if value != VERSION:
        raise UploadRejected(412, f"send Tus-Resumable: {VERSION} (this server speaks tus {VERSION})")


def number(value: str | None, name: str) -> int:
    """A non-negative integer header; 400 with the reason otherwise."""
    if value is None or not value.strip().isdigit():
        raise UploadRejected(400, f"{name} must be a non-negative integer")
    return int(value.strip())


def metadata(value: str | None) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64(value)` pairs; the keys imuflow reads."""
    if not value:
        return {}
    if len(value) > MAX_METADATA:
        raise UploadRejected(400, f"Upload-Metadata is longer than {MAX_METADATA} characters")
    found: dict[str, str] = {}
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not key:
            continue
        try:
            text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise UploadRejected(400, f"Upload-Metadata value of {key!r} is not base64 of UTF-8") from exc
        if key in METADATA_KEYS:
            found[key] = text.strip()
    return found


def encode_metadata(values: dict[str, Any]) -> str:
    """The reverse of `metadata` (for HEAD)."""
    return ",".join(f"{k} {base64.b64encode(str(v).encode()).decode()}" for k, v in values.items())


def checksum(value: str | None) -> tuple[str, bytes] | None:
    """`Upload-Checksum: <algorithm> <base64 digest>`; 400 for an unsupported algorithm."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm.lower() not in CHECKSUMS:
        raise UploadRejected(400, f"checksum algorithm {algorithm!r} unsupported: use {', '.join(CHECKSUMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as exc:
        raise UploadRejected(400, "Upload-Checksum digest is not base64") from exc
    return algorithm.lower(), digest
