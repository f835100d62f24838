"""pyarrow block parsing, with the slow path for damaged blocks."""

from __future__ import annotations

import pyarrow as pa

from services.parser.formats.blocks import parse_block


def test_fast_path_types_and_nulls() -> None:
    blk = parse_block(b"1,2.5,\n2,NaN,3\n", 3, ",", False, {0: pa.int64(), 1: pa.float32()})
    assert blk.n_rows == 2 and blk.columns[0].to_pylist() == [1, 2]
    assert blk.columns[1].to_pylist()[0] == 2.5 and blk.cells_fixed == 0


def test_damaged_cells_become_null_and_short_rows_are_reported() -> None:
    data = b"1,2.5,1\n2,oops,3\n3,4\n99999999999999999999999,1,1\n"
    blk = parse_block(data, 3, ",", False, {0: pa.int64(), 1: pa.float32(), 2: pa.float32()})
    assert blk.n_rows == 3
    assert blk.columns[1].to_pylist()[1] is None and blk.columns[0].to_pylist()[2] is None
    assert blk.bad_rows == [(3, "3,4")] and blk.cells_fixed == 2
