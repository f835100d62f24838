"""Export a file's samples as CSV or Parquet, streamed with constant memory.

One export = one connection and one statement, so it reads one consistent snapshot however
long the client takes. The connection comes from the exports' own bounded pool
(`IMUFLOW_EXPORT_POOL_SIZE`), never the service's, so slow downloads cannot starve the
applier, the relays or the API; a user holds at most `IMUFLOW_MAX_CONCURRENT_EXPORTS`
at once (429 with Retry-After beyond), and both are given back when the response ends.
CSV is formatted by Postgres itself (`COPY (SELECT ...) TO STDOUT`) and forwarded chunk
by chunk through a small bounded queue, so a slow client pauses the COPY instead of
filling memory. Parquet reads a server-side cursor page by page; each page becomes one
row group, written into a buffer that is drained to the client before the next page.
Rows come in stored order: (sample_index, sensor).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from contracts.records import ErrorBody
from imuflow.web import CurrentUser
from services.progress.api import NOT_FOUND, TOO_MANY, OwnedFile, Repo
from services.progress.lifecycle import QUERIES
from services.progress.limits import ReleasingStream, UserSlots

if TYPE_CHECKING:  # pyarrow is imported by the first Parquet export: 0.3 s off every start
    import pyarrow as pa
    import pyarrow.parquet as pq

VALUES = ("ax", "ay", "az", "gx", "gy", "gz", "mx", "my", "mz")
STORED_UNIT = {"a": "m/s^2", "g": "rad/s", "m": "uT"}  # SPEC §4 canonical units
LABEL = {"a": "accelerometer", "g": "gyroscope", "m": "magnetometer"}
PAGE_ROWS = 16_384  # Parquet row group (and cursor page) size
QUEUE_CHUNKS = 8  # COPY chunks buffered between Postgres and the client
FLUSH_BYTES = 256 * 1024
MAX_BUCKETS = 100_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EXPORT_RETRY_AFTER = 5  # seconds, in the 429/503 of an export that cannot start now
POOL_WAIT = 5.0  # how long an export waits for a connection of its pool before a 503

log = logging.getLogger("imuflow.progress")
router = APIRouter(prefix="/api", tags=["files"], responses={503: {"model": ErrorBody}})


@dataclass(frozen=True)
class Layout:
    """The exported columns and their units."""

    columns: tuple[str, ...]  # value columns present in the file
    units: dict[str, str]  # stored unit per value column
    sensor: bool  # rows name their sensor (a multi-sensor file)
    buckets: bool

    def header(self) -> list[str]:
        """CSV header names, units in parentheses."""
        if self.buckets:
            names = ["bucket", "t_ns", "samples"]
            names += [f"{c}_{m} ({self.units[c]})" for c in self.columns for m in ("min", "max")]
        else:
            names = ["sample_index", "t_ns"] + [f"{c} ({self.units[c]})" for c in self.columns]
        if self.sensor:
            names.insert(1, "sensor")
        return names


@router.get(
    "/files/{file_id}/samples",
    responses={
        200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}},
        **NOT_FOUND,
        400: {"model": ErrorBody},
        409: {"model": ErrorBody},
        **TOO_MANY,
    },
)
async def export_samples(
    request: Request,
    record: OwnedFile,
    user: CurrentUser,
    repo: Repo,
    as_: Annotated[Literal["csv", "parquet"], Query(alias="as")] = "csv",
    start: Annotated[str | None, Query(description="first time (ns since epoch, or ISO-8601)")] = None,
    end: Annotated[str | None, Query(description="end time, exclusive (ns or ISO-8601)")] = None,
    every: Annotated[int | None, Query(ge=1, description="keep every n-th sample (per sensor)")] = None,
    buckets: Annotated[
        int | None, Query(ge=1, le=MAX_BUCKETS, description="min/max per bucket, for plotting")
    ] = None,
) -> StreamingResponse:
    """The file's stored samples, in order, as CSV (units in the header) or Parquet."""
    if every is not None and buckets is not None:
        raise HTTPException(400, "use either `every` or `buckets`, not both")
    if record.children:
        ids = ", ".join(str(c) for c in record.children)
        raise HTTPException(409, f"a ZIP upload has no samples of its own; export its files: {ids}")
    t0, t1 = _time_arg(start, "start"), _time_arg(end, "end")
    info = await repo.pool.fetchrow(QUERIES["export_layout"], record.id)
    if info is None:
        raise HTTPException(404, "file not found")
    layout = _layout(info, buckets is not None)
    query, args = await _query(repo.pool, record.id, layout, t0, t1, every, buckets)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", record.filename.rsplit(".", 1)[0])[:80] or "samples"
    meta = {"file_id": str(record.id), "filename": record.filename, "units": layout.units}
    conn, release = await _admit(request, user.id)
    try:
        if as_ == "csv":
            body = _csv(conn, query, args, layout)
            media, suffix = "text/csv; charset=utf-8", "csv"
        else:
            body = _parquet(conn, query, args, layout, meta | {"every": every, "buckets": buckets})
            media, suffix = "application/vnd.apache.parquet", "parquet"
        disposition = f'attachment; filename="{stem}.{suffix}"'
        return ReleasingStream(body, release, media_type=media, headers={"Content-Disposition": disposition})
    except BaseException:
        await release()
        raise


async def _admit(request: Request, user_id: Any) -> tuple[asyncpg.Connection, Callable[[], Awaitable[None]]]:
    """The user's export slot and a connection of the export pool, and how to give both back."""
    slots: UserSlots = request.app.state.exports
    pool: asyncpg.Pool = request.app.state.export_pool
    slots.take(user_id)
    try:
        conn: asyncpg.Connection = await pool.acquire(timeout=POOL_WAIT)
    except TimeoutError as exc:
        slots.give_back(user_id)
        raise HTTPException(
            503,
            "every export connection is busy; try again shortly",
            {"Retry-After": str(EXPORT_RETRY_AFTER)},
        ) from exc
    except BaseException:
        slots.give_back(user_id)
        raise
    released = False

    async def release() -> None:
        nonlocal released
        if released:
            return
        released = True
        try:
            await pool.release(conn, timeout=5)
        except Exception:  # a connection that cannot be reset is closed by asyncpg; carry on
            log.warning("export connection not reusable; closed", exc_info=True)
        finally:
            slots.give_back(user_id)

    return conn, release


def _time_arg(value: str | None, name: str) -> int | None:
    """ns since the epoch from an integer or an ISO-8601 time (UTC when it names no zone)."""
    if value is None or value == "":
        return None
    if re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise HTTPException(400, f"{name} must be ns since the epoch or an ISO-8601 time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _layout(info: asyncpg.Record, buckets: bool) -> Layout:
    units: dict[str, str] = dict(info["units"] or {})
    present = tuple(c for c in VALUES if c in units) or VALUES
    warnings = " ".join(info["warnings"] or [])
    stored: dict[str, str] = {}
    for col in present:
        canonical = STORED_UNIT[col[0]]
        source = units.get(col)
        # The parser stores values it cannot convert as given and says so in a warning.
        as_given = source is not None and f"{LABEL[col[0]]} unit {source!r} cannot be converted" in warnings
        stored[col] = source if as_given and source else canonical
    return Layout(present, stored, bool(info["has_sensor"]), buckets)


async def _query(
    pool: asyncpg.Pool,
    file_id: Any,
    layout: Layout,
    t0: int | None,
    t1: int | None,
    every: int | None,
    buckets: int | None,
) -> tuple[str, list[Any]]:
    args: list[Any] = [file_id, t0, t1]
    where = "file_id = $1 AND ($2::bigint IS NULL OR t_ns >= $2) AND ($3::bigint IS NULL OR t_ns < $3)"
    sensor = ["sensor"] if layout.sensor else []
    if buckets is None:
        if every is not None and every > 1:
            args.append(every)
            where += " AND sample_index % $4 = 0"
        cols = ", ".join(["sample_index", *sensor, "t_ns", *layout.columns])
        order = "sample_index, sensor" if layout.sensor else "sample_index"
        return f"SELECT {cols} FROM imu_samples WHERE {where} ORDER BY {order}", args
    span = await pool.fetchrow(QUERIES["index_range"], file_id, t0, t1)
    lo = span["lo"] if span and span["lo"] is not None else 0
    hi = span["hi"] if span and span["hi"] is not None else 0
    width = max(1, -(-(hi - lo + 1) // buckets))
    args += [lo, width]
    aggs = ", ".join(f"min({c}) AS {c}_min, max({c}) AS {c}_max" for c in layout.columns)
    cols = ", ".join(
        ["(sample_index - $4) / $5 AS bucket", *sensor, "min(t_ns) AS t_ns", "count(*) AS samples"]
    )
    group = "bucket, sensor" if layout.sensor else "bucket"
    return f"SELECT {cols}, {aggs} FROM imu_samples WHERE {where} GROUP BY {group} ORDER BY {group}", args


async def _csv(
    conn: asyncpg.Connection, query: str, args: list[Any], layout: Layout
) -> AsyncGenerator[bytes, None]:
    """The CSV: our header line, then Postgres' own CSV of the rows."""
    yield (",".join(layout.header()) + "\n").encode()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=QUEUE_CHUNKS)

    async def forward(chunk: bytes) -> None:
        await queue.put(bytes(chunk))

    async def copy() -> None:
        try:
            await conn.copy_from_query(query, *args, output=forward, format="csv")
        finally:
            await queue.put(None)

    task = asyncio.create_task(copy(), name="export-copy")
    try:
        pending: list[bytes] = []
        size = 0
        while (chunk := await queue.get()) is not None:
            pending.append(chunk)
            size += len(chunk)
            if size >= FLUSH_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)
        await task  # surface a failed COPY (the response then ends early)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _Drain:
    """A write-only sink for ParquetWriter whose bytes are taken out after each row group."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position  # the writer records row-group offsets from this

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _schema(layout: Layout, meta: dict[str, Any]) -> pa.Schema:
    import pyarrow as pa

    fields: list[pa.Field] = []
    if layout.buckets:
        fields += (
            [pa.field("bucket", pa.int64()), pa.field("sensor", pa.string())]
            if layout.sensor
            else [pa.field("bucket", pa.int64())]
        )
        fields += [pa.field("t_ns", pa.int64()), pa.field("samples", pa.int64())]
        for c in layout.columns:
            for m in ("min", "max"):
                fields.append(pa.field(f"{c}_{m}", pa.float32(), metadata={"unit": layout.units[c]}))
    else:
        fields.append(pa.field("sample_index", pa.int64()))
        if layout.sensor:
            fields.append(pa.field("sensor", pa.string()))
        fields.append(pa.field("t_ns", pa.int64(), metadata={"unit": "ns"}))
        fields += [pa.field(c, pa.float32(), metadata={"unit": layout.units[c]}) for c in layout.columns]
    return pa.schema(fields, metadata={"imuflow": json.dumps(meta)})


def _row_group(writer: pq.ParquetWriter, drain: _Drain, schema: pa.Schema, rows: list[Any]) -> bytes:
    import pyarrow as pa

    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    arrays = [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)]
    writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=PAGE_ROWS)
    return drain.take()


async def _parquet(
    conn: asyncpg.Connection, query: str, args: list[Any], layout: Layout, meta: dict[str, Any]
) -> AsyncGenerator[bytes, None]:
    """The Parquet file: one row group per cursor page, drained to the client as it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(layout, meta)
    drain = _Drain()
    writer = pq.ParquetWriter(pa.PythonFile(drain, mode="w"), schema, compression="zstd")
    async with conn.transaction(readonly=True):
        cursor = await conn.cursor(query, *args)
        while rows := await cursor.fetch(PAGE_ROWS):
            yield await asyncio.to_thread(_row_group, writer, drain, schema, rows)
    writer.close()
    yield drain.take()
