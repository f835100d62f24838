"""Parse one block of complete lines into typed columns with pyarrow.

The fast path hands the whole block to pyarrow's C++ CSV parser with fixed column
types. A block with a value pyarrow cannot convert (a word in a number column, a
spreadsheet-mangled timestamp) is parsed again as text and converted column by column,
so one bad cell costs its row that cell, not the whole block.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv


@dataclass
class Block:
    """Typed columns of one block plus the rows pyarrow had to drop."""

    columns: dict[int, pa.Array]
    n_rows: int
    bad_rows: list[tuple[int | None, str]] = field(default_factory=list)  # (line, text)
    cells_fixed: int = 0  # cells that fell back to NULL in the slow path


# pyarrow's own list of cells that read as NULL. Every cell of a number column is looked up
# in it, and the entries starting "-" or "1." (-nan, -1.#IND, 1.#QNAN...) are walked into
# by every negative number and every number starting "1.": ~13 % of a block's parse. The
# first read of an all-numeric block leaves them out; one of them in a block makes the
# conversion fail on it, and the block is read again with the whole list. Only "-nan" and
# "-NaN" read differently in a float column, as NaN instead of NULL: the same NaN value.
_NULLS = list(pacsv.ConvertOptions().null_values)
_QUICK_NULLS = [v for v in _NULLS if not v.startswith(("-", "1."))]
_INVALID_VALUE = re.compile(r"invalid value '(.*)'$")


def _failed_on_a_null(exc: pa.ArrowInvalid) -> bool:
    """Whether a quick read failed on a cell the whole null list makes NULL (or maybe did)."""
    m = _INVALID_VALUE.search(str(exc))
    return m is None or m.group(1) in _NULLS


def _names(width: int) -> list[str]:
    return [f"c{i}" for i in range(width)]


def _to_float(text: str | None) -> float | None:
    try:
        v = float((text or "").strip().replace(",", "."))
    except ValueError:
        return None
    return v if math.isfinite(v) or math.isnan(v) else None


# What `_to_float` / the int path accept, as RE2 patterns for pyarrow's C++ matcher.
_FLOAT_TEXT = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$|^[+-]?(?i:nan)$"
_INT_TEXT = r"^[+-]?\d{1,19}$"


def _convert(col: pa.Array, target: pa.DataType) -> tuple[pa.Array, int]:
    # Vectorised: cells that are not numbers become NULL in C++, not in a Python loop per
    # cell (a block of junk cells parsed at ~1.5 MB/s that way). No plain cast is tried
    # first: on a column of junk a failing cast costs more than this whole path.
    text = pc.utf8_trim_whitespace(col)
    if pa.types.is_integer(target):
        text = pc.replace_substring_regex(text, r"^\+", "")
        pattern = _INT_TEXT
    else:
        if pc.any(pc.match_substring(text, ",")).as_py():  # a quoted decimal comma; rare
            text = pc.replace_substring(text, ",", ".")
        pattern = _FLOAT_TEXT
    numbers = pc.if_else(pc.match_substring_regex(text, pattern), text, pa.scalar(None, pa.string()))
    try:
        out = pc.cast(numbers, pa.int64() if pa.types.is_integer(target) else target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out = _convert_slowly(col, target)  # e.g. a 19-digit integer beyond int64
    return out, int(out.null_count) - int(col.null_count)


def _convert_slowly(col: pa.Array, target: pa.DataType) -> pa.Array:
    texts = col.to_pylist()
    if pa.types.is_integer(target):
        ints: list[int | None] = []
        for t in texts:
            s = (t or "").strip().removeprefix("+")
            ok = s.lstrip("-").isdigit() and len(s) < 20 and -(2**63) <= int(s) < 2**63
            ints.append(int(s) if ok else None)
        return pa.array(ints, type=pa.int64())
    return pa.array([_to_float(t) for t in texts], type=target)


def _one_array(col: pa.ChunkedArray) -> pa.Array:
    # A block is read as one chunk (block_size above): take it as it is, as
    # `combine_chunks` would copy it.
    return col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()


def parse_block(
    data: bytes | bytearray,
    width: int,
    delimiter: str,
    quoted: bool,
    types: dict[int, pa.DataType],
) -> Block:
    """Parse `data` (complete lines) into the columns named in `types`."""
    # Only empty lines (a block of NULs, once they are removed)? Looking at the first byte
    # settles almost every block without the copy `strip` makes of the whole block.
    if data[:1] in (b"\r", b"\n", b"") and not data.strip(b"\r\n"):
        return Block({i: pa.array([], type=t) for i, t in types.items()}, 0)
    bad: list[tuple[int | None, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, row.text))
        return "skip"

    def read(column_types: dict[str, pa.DataType], nulls: list[str] = _NULLS) -> pa.Table:
        bad.clear()
        return pacsv.read_csv(
            pa.BufferReader(data),  # reads the bytes in place: no copy through a Python file
            read_options=pacsv.ReadOptions(
                column_names=_names(width),
                use_threads=False,
                block_size=max(len(data) + 1, 1 << 16),
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter,
                quote_char='"' if quoted else False,
                invalid_row_handler=on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                include_columns=[f"c{i}" for i in sorted(types)],
                column_types=column_types,
                null_values=nulls,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )

    wanted = {f"c{i}": t for i, t in types.items()}
    numeric = all(pa.types.is_floating(t) or pa.types.is_integer(t) for t in types.values())
    table: pa.Table | None = None
    try:
        table = read(wanted, _QUICK_NULLS if numeric else _NULLS)
    except pa.ArrowInvalid as exc:
        if numeric and _failed_on_a_null(exc):
            try:
                table = read(wanted)
            except pa.ArrowInvalid:
                table = None
    fixed = 0
    if table is None:
        table = read({k: pa.string() for k in wanted})
        cols: dict[str, pa.Array] = {}
        for name, target in wanted.items():
            col = table.column(name).combine_chunks()
            cols[name], n_fixed = (col, 0) if target == pa.string() else _convert(col, target)
            fixed += n_fixed
        table = pa.table(cols)
    columns = {int(name[1:]): _one_array(table.column(name)) for name in wanted}
    return Block(columns, table.num_rows, list(bad), fixed)
