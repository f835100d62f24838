"""Streaming multipart reader: the request body goes straight to storage.

FastAPI's `UploadFile` spools the whole body to a temporary file before the handler
runs (a 2 GB upload written twice, and no 413 until it is all in). Here the body is
fed chunk by chunk to `streaming-form-data`, whose file target hands it to the upload's
sink (a local file or an S3 multipart upload), so the size limit is enforced while the
bytes arrive and memory stays at one part whatever the upload's size.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import ClientDisconnect, Request
from streaming_form_data import StreamingFormDataParser
from streaming_form_data.targets import BaseTarget, ValueTarget

from services.ingest.storage import UploadSink

MAX_FIELD_BYTES = 1024  # format, sensor, timezone, allow_duplicate are short


class UploadRejected(Exception):
    """The request cannot be accepted; `status` and `detail` go to the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _SinkTarget(BaseTarget):  # type: ignore[misc]
    def __init__(self, sink: UploadSink) -> None:
        super().__init__()
        self.sink = sink
        self.seen = False

    def on_start(self) -> None:
        self.seen = True

    def on_data_received(self, chunk: bytes) -> None:
        self.sink.write(chunk)


class _ShortValue(ValueTarget):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def on_data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= MAX_FIELD_BYTES:
            super().on_data_received(chunk)


@dataclass
class UploadForm:
    """What the multipart body carried besides the file bytes."""

    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)


FIELDS = ("format", "sensor", "timezone", "allow_duplicate")

# Called after each stored chunk of the file part with (sink, body bytes received, its
# filename, the fields complete so far) until it answers False: services/ingest/early.py.
Observer = Callable[[UploadSink, int, "str | None", dict[str, str]], Awaitable[bool]]


async def receive_upload(request: Request, sink: UploadSink, observe: Observer | None = None) -> UploadForm:
    """Stream the body into `sink`; raise UploadRejected (400/413) with a reason."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadRejected(400, "send the file as multipart/form-data in a field named 'file'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > sink.max_bytes + 64 * 1024:
        raise UploadRejected(413, _too_large(sink.max_bytes))
    try:
        parser = StreamingFormDataParser(headers=request.headers)
    except Exception as exc:  # the library raises bare errors for a bad boundary
        raise UploadRejected(400, f"malformed multipart header: {exc}") from exc
    target = _SinkTarget(sink)
    values = {name: _ShortValue() for name in FIELDS}
    parser.register("file", target)
    for name, value in values.items():
        parser.register(name, value)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > sink.max_bytes + 64 * 1024 or sink.too_large:
                raise UploadRejected(413, _too_large(sink.max_bytes))
            parser.data_received(chunk)
            await sink.drain()  # backpressure: the next chunk is read once this one is stored
            if observe is not None and target.seen:
                keep = await observe(sink, received, target.multipart_filename, _fields(values))
                observe = observe if keep else None
    except ClientDisconnect as exc:
        raise UploadRejected(400, "the client disconnected before the upload finished") from exc
    except UploadRejected:
        raise
    except Exception as exc:  # ParseFailedException and friends: a broken body
        raise UploadRejected(400, f"malformed multipart body: {exc}") from exc
    if sink.too_large:
        raise UploadRejected(413, _too_large(sink.max_bytes))
    if not target.seen:
        raise UploadRejected(400, "no file: send it in a multipart field named 'file'")
    for name, value in values.items():
        if value.size > MAX_FIELD_BYTES:
            raise UploadRejected(400, f"field '{name}' is longer than {MAX_FIELD_BYTES} bytes")
    return UploadForm(filename=target.multipart_filename, fields=_fields(values))


def _fields(values: dict[str, _ShortValue]) -> dict[str, str]:
    """The fields received so far, as text."""
    return {
        name: value.value.decode("utf-8", "replace").strip() for name, value in values.items() if value.value
    }


def _too_large(limit: int) -> str:
    return f"file larger than the {limit:,}-byte limit (IMUFLOW_MAX_UPLOAD_BYTES)"
