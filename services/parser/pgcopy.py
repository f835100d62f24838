"""Postgres binary COPY rows for `imu_samples`, built with numpy, not per-row Python.

Each row is a field count then, per field, a big-endian int32 length and the bytes
(length -1 for NULL, no bytes). Fields that are present in every row or NULL in every
row have a fixed width, so a whole batch is one `tobytes()`; only columns with some
NULLs need a keep-mask to squeeze out the bytes of their NULL cells.

The common case (every column present in every row or in none, one sensor name or none)
has one row width, so it is written as a packed numpy record array: one strided
assignment per column instead of stacking and masking byte blocks (~8x faster, and the
encoder runs in the parser's critical path).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import numpy.typing as npt

from services.parser.formats.base import NULL_TIME, VALUE_COLUMNS, SampleBatch

COLUMNS: tuple[str, ...] = ("file_id", "sample_index", "t_ns", *VALUE_COLUMNS, "sensor")
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
_NULL = np.frombuffer((-1).to_bytes(4, "big", signed=True), dtype=np.uint8)

Block = tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_] | None]


def _lengths(n: int, size: int) -> npt.NDArray[np.uint8]:
    return np.broadcast_to(np.frombuffer(size.to_bytes(4, "big"), dtype=np.uint8), (n, 4))


def field(data: npt.NDArray[np.uint8], present: npt.NDArray[np.bool_]) -> Block:
    """A fixed-size field: `data` is (n, size) bytes, `present` marks non-NULL rows."""
    n, size = data.shape
    if present.all():
        return np.hstack([_lengths(n, size), data]), None
    if not present.any():
        return null_field(n)
    block = np.hstack([_lengths(n, size), data])
    block[~present, :4] = _NULL
    keep = np.ones(block.shape, dtype=np.bool_)
    keep[~present, 4:] = False
    return block, keep


def null_field(n: int) -> Block:
    """A field that is NULL in all `n` rows."""
    return np.broadcast_to(_NULL, (n, 4)).copy(), None


def number_field(values: npt.NDArray[Any], dtype: str, present: npt.NDArray[np.bool_] | None = None) -> Block:
    """A numeric field of (n,) `values` sent as `dtype` (">i4", ">i8", ">f4"...)."""
    data = _big_endian(np.asarray(values).astype(dtype))
    return field(data, np.ones(data.shape[0], np.bool_) if present is None else present)


# Element type OIDs of the arrays `array_field` sends (pg_type.dat).
ARRAY_OIDS = {">i4": 23, ">f4": 700, ">f8": 701}


def array_field(values: npt.NDArray[Any], dtype: str, present: npt.NDArray[np.bool_]) -> Block:
    """A one-dimensional array field per row of (n, k) `values` (elements NULL where not
    `present`), in array_send's layout: ndim, has-NULL flag, element OID, length, lower
    bound, then each element as a field."""
    n, k = values.shape
    size = np.dtype(dtype).itemsize
    head = np.zeros(n, dtype=[(name, ">i4") for name in ("len", "ndim", "flags", "oid", "dim", "lower")])
    head["len"] = 20 + 4 * k + size * present.sum(axis=1)
    head["ndim"], head["oid"], head["dim"], head["lower"] = 1, ARRAY_OIDS[dtype], k, 1
    head["flags"] = ~present.all(axis=1)
    elements = [number_field(values[:, j], dtype, present[:, j]) for j in range(k)]
    blocks = [(head.view(np.uint8).reshape(n, 24), None), *elements]
    return _stack(blocks)


def _stack(blocks: list[Block]) -> Block:
    """Blocks side by side, as one block (with a keep-mask if any of them has one)."""
    rows = np.hstack([b for b, _ in blocks])
    if all(keep is None for _, keep in blocks):
        return rows, None
    return rows, np.hstack([k if k is not None else np.ones(b.shape, np.bool_) for b, k in blocks])


def join_rows(blocks: list[Block]) -> bytes:
    """The rows' bytes: the blocks side by side, the bytes of NULL cells squeezed out."""
    if not blocks or blocks[0][0].shape[0] == 0:
        return b""
    rows, keep = _stack(blocks)
    return bytes(rows[keep].tobytes() if keep is not None else rows.tobytes())


def field_count(n: int, count: int) -> Block:
    """Each row's leading field count."""
    return np.broadcast_to(np.frombuffer(count.to_bytes(2, "big"), np.uint8), (n, 2)), None


def _sensor_block(batch: SampleBatch) -> Block:
    n = len(batch)
    if batch.sensor is None or not batch.sensors:
        return null_field(n)
    names = [s.encode() for s in batch.sensors]
    width = max(len(b) for b in names)
    table = np.zeros((len(names), 4 + width), dtype=np.uint8)
    table_keep = np.zeros(table.shape, dtype=np.bool_)
    for i, name in enumerate(names):
        table[i, :4] = np.frombuffer(len(name).to_bytes(4, "big"), dtype=np.uint8)
        table[i, 4 : 4 + len(name)] = np.frombuffer(name, dtype=np.uint8)
        table_keep[i, : 4 + len(name)] = True
    codes = batch.sensor.astype(np.intp)
    keep = table_keep[codes]
    return table[codes], (None if keep.all() else keep)


def encode(file_id: uuid.UUID, batch: SampleBatch, *, with_header: bool = True) -> bytes:
    """The COPY BINARY payload (header, rows, trailer) for one batch, as one bytes object."""
    parts = encode_parts(file_id, batch)
    return b"".join(parts if with_header else parts[1:])


def encode_parts(file_id: uuid.UUID, batch: SampleBatch) -> list[memoryview]:
    """The COPY BINARY payload as [header, rows, trailer] buffers, the rows not copied again.

    Copying a few hundred MB into one `bytes` costs as much as encoding them (page faults
    on fresh memory), so the rows stay in the array they were built in.
    """
    rows = _fixed_width_rows(file_id, batch)
    body = rows.view(np.uint8).data if rows is not None else memoryview(_masked_rows(file_id, batch))
    return [memoryview(HEADER), body, memoryview(TRAILER)]


def _column_presence(values: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per column: present in every row, present in none. A NaN-free sum proves the first
    cheaply; only columns whose sum is NaN (or inf) are scanned for NaNs."""
    if np.isfinite(values.sum()):  # a contiguous sum: the common all-present case
        return np.ones(values.shape[1], np.bool_), np.zeros(values.shape[1], np.bool_)
    sums = values.sum(axis=0, dtype=np.float64)
    col_all = np.isfinite(sums)
    col_none = np.zeros_like(col_all)
    for col in np.flatnonzero(~col_all):
        nan = np.isnan(values[:, col])
        col_all[col] = not nan.any()
        col_none[col] = bool(nan.all())
    return col_all, col_none


def _fixed_width_rows(file_id: uuid.UUID, batch: SampleBatch) -> npt.NDArray[np.void] | None:
    """The rows as one packed record array, or None when some column is partly NULL."""
    n = len(batch)
    values = np.asarray(batch.values, dtype=np.float32)
    col_all, col_none = _column_presence(values)
    has_time = batch.t_ns != NULL_TIME
    time_all = bool(has_time.all())
    if not (col_all | col_none).all() or not (time_all or not has_time.any()):
        return None
    sensor_name: bytes | None = None
    if batch.sensor is not None and batch.sensors:
        codes = np.unique(batch.sensor)
        if len(codes) != 1:
            return None
        sensor_name = batch.sensors[int(codes[0])].encode()
    fields: list[tuple[str, str]] = [
        ("count", ">i2"),
        ("l_id", ">i4"),
        ("id", "V16"),
        ("l_idx", ">i4"),
        ("idx", ">i8"),
    ]
    fields += [("l_t", ">i4")] + ([("t", ">i8")] if time_all else [])
    for col, name in enumerate(VALUE_COLUMNS):
        fields += [(f"l_{name}", ">i4")] + ([(name, ">f4")] if col_all[col] else [])
    fields += [("l_sensor", ">i4")] + ([("sensor", f"V{len(sensor_name)}")] if sensor_name else [])
    dtype = np.dtype(fields)
    # Lengths, field count and file id are the same in every row: one template row,
    # broadcast in one pass, then one strided pass per variable column.
    template = np.zeros(1, dtype=dtype)
    template["count"] = len(COLUMNS)
    template["l_id"], template["id"], template["l_idx"] = 16, np.void(file_id.bytes), 8
    template["l_t"] = 8 if time_all else -1
    for col, name in enumerate(VALUE_COLUMNS):
        template[f"l_{name}"] = 4 if col_all[col] else -1
    template["l_sensor"] = len(sensor_name) if sensor_name else -1
    if sensor_name:
        template["sensor"] = np.void(sensor_name)
    rows = np.tile(template.view(np.uint8), n).view(dtype)
    rows["idx"] = batch.sample_index
    if time_all:
        rows["t"] = batch.t_ns
    for col, name in enumerate(VALUE_COLUMNS):
        if col_all[col]:
            rows[name] = values[:, col]
    return rows


def _masked_rows(file_id: uuid.UUID, batch: SampleBatch) -> bytes:
    """Any mix of NULLs: byte blocks per field, NULL cells squeezed out with a mask."""
    n = len(batch)
    everywhere = np.ones(n, np.bool_)
    blocks: list[Block] = [
        field_count(n, len(COLUMNS)),
        field(np.broadcast_to(np.frombuffer(file_id.bytes, np.uint8), (n, 16)), everywhere),
        number_field(batch.sample_index, ">i8"),
        number_field(batch.t_ns, ">i8", batch.t_ns != NULL_TIME),
    ]
    values = np.ascontiguousarray(batch.values, dtype=np.float32)
    present = ~np.isnan(values)
    for col in range(len(VALUE_COLUMNS)):
        blocks.append(number_field(values[:, col], ">f4", present[:, col]))
    blocks.append(_sensor_block(batch))
    return join_rows(blocks)


def _big_endian(column: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """View an (n,) big-endian column as (n, itemsize) bytes."""
    return np.ascontiguousarray(column).view(np.uint8).reshape(column.shape[0], -1)
