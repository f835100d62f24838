"""Postgres binary COPY rows for `imu_samples`, built with numpy, not per-row Python.

Each row is a field count then, per field, a big-endian int32 length and the bytes
(length -1 for NULL, no bytes). Fields that are present in every row or NULL in every
row have a fixed width, so a whole batch is one `tobytes()`; only columns with some
NULLs need a keep-mask to squeeze out the bytes of their NULL cells.
"""

from __future__ import annotations

import uuid

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


def _fixed(data: npt.NDArray[np.uint8], present: npt.NDArray[np.bool_]) -> Block:
    """A fixed-size field: `data` is (n, size) bytes, `present` marks non-NULL rows."""
    n, size = data.shape
    if present.all():
        return np.hstack([_lengths(n, size), data]), None
    if not present.any():
        return np.broadcast_to(_NULL, (n, 4)).copy(), None
    block = np.hstack([_lengths(n, size), data])
    block[~present, :4] = _NULL
    keep = np.ones(block.shape, dtype=np.bool_)
    keep[~present, 4:] = False
    return block, keep


def _sensor_block(batch: SampleBatch) -> Block:
    n = len(batch)
    if batch.sensor is None or not batch.sensors:
        return np.broadcast_to(_NULL, (n, 4)).copy(), None
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
    """The COPY BINARY payload (header, rows, trailer) for one batch."""
    n = len(batch)
    blocks: list[Block] = [
        (np.broadcast_to(np.frombuffer((len(COLUMNS)).to_bytes(2, "big"), np.uint8), (n, 2)), None),
        _fixed(np.broadcast_to(np.frombuffer(file_id.bytes, np.uint8), (n, 16)), np.ones(n, np.bool_)),
        _fixed(_big_endian(batch.sample_index.astype(">i8")), np.ones(n, np.bool_)),
        _fixed(_big_endian(batch.t_ns.astype(">i8")), batch.t_ns != NULL_TIME),
    ]
    values = np.ascontiguousarray(batch.values, dtype=np.float32)
    present = ~np.isnan(values)
    big = values.astype(">f4")
    for col in range(len(VALUE_COLUMNS)):
        blocks.append(_fixed(_big_endian(np.ascontiguousarray(big[:, col])), present[:, col]))
    blocks.append(_sensor_block(batch))
    rows = np.hstack([b for b, _ in blocks]) if n else np.zeros((0, 0), np.uint8)
    if any(keep is not None for _, keep in blocks):
        keep = np.hstack([k if k is not None else np.ones(b.shape, np.bool_) for b, k in blocks])
        body = rows[keep].tobytes()
    else:
        body = rows.tobytes()
    return (HEADER if with_header else b"") + bytes(body) + TRAILER


def _big_endian(column: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """View an (n,) big-endian column as (n, itemsize) bytes."""
    return np.ascontiguousarray(column).view(np.uint8).reshape(column.shape[0], -1)
