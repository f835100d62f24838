"""pyarrow block parsing, with the slow path for damaged blocks."""

from __future__ import annotations

import numpy as np
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


def test_slow_path_conversion_matches_the_cell_rules() -> None:
    data = b"+5,1.,x\n-7,.5,\n0012,1e3,nan\n1700000000000000000,+1.5E-3,inf\n9999999999999999999,oops,3\n"
    blk = parse_block(data, 3, ",", False, {0: pa.int64(), 1: pa.float32(), 2: pa.float32()})
    assert blk.columns[0].to_pylist() == [5, -7, 12, 1_700_000_000_000_000_000, None]
    floats = blk.columns[1].to_pylist()
    assert floats[:3] == [1.0, 0.5, 1000.0] and abs(floats[3] - 0.0015) < 1e-9 and floats[4] is None
    third = blk.columns[2].to_pylist()
    assert third[:4] == [None, None, None, None]  # x, empty, nan (a CSV null) and inf
    assert third[4] == 3.0


def test_a_block_of_junk_cells_converts_fast() -> None:
    import time

    data = b"a,b,c\n" * 200_000
    t0 = time.perf_counter()
    blk = parse_block(data, 3, ",", False, {0: pa.float64(), 1: pa.float32(), 2: pa.float32()})
    assert time.perf_counter() - t0 < 3  # ~0.1 s in C++; the per-cell Python loop took ~1 s
    assert blk.n_rows == 200_000 and blk.columns[1].null_count == 200_000


def test_a_block_of_empty_lines_is_an_empty_block() -> None:
    # pyarrow calls such data an "Empty CSV file" (a block of NULs once they are removed).
    for data in (b"", b"\n\n", b"\r\n"):
        blk = parse_block(data, 3, ",", False, {0: pa.float32()})
        assert blk.n_rows == 0 and len(blk.columns[0]) == 0


def test_a_quoted_decimal_comma_still_converts_in_the_slow_path() -> None:
    blk = parse_block(b'"1,5",x\n"2",y\n', 2, ",", True, {0: pa.float32(), 1: pa.float32()})
    assert blk.columns[0].to_pylist() == [1.5, 2.0] and blk.columns[1].null_count == 2


def test_every_pyarrow_null_cell_is_still_empty_without_the_slow_path() -> None:
    # The first read leaves the "-..." and "1.#..." null spellings out (they slow every
    # number down); a block holding one is read again with the whole list, not as junk.
    data = b"1,1.#IND,5\n2,-1.#QNAN,NA\n3,-nan,-NaN\n-4,2.5,-6\n"
    blk = parse_block(data, 3, ",", False, {0: pa.int64(), 1: pa.float32(), 2: pa.float32()})
    assert blk.n_rows == 4 and blk.cells_fixed == 0
    floats = blk.columns[1].to_numpy(zero_copy_only=False)
    assert np.isnan(floats[:3]).all() and floats[3] == 2.5
    assert blk.columns[1].null_count == 3  # read with the whole list: NULL, as before
    assert np.isnan(blk.columns[2].to_numpy(zero_copy_only=False)[1:3]).all()
    ints = parse_block(b"-nan,1\n7,2\n", 2, ",", False, {0: pa.int64(), 1: pa.float32()})
    assert ints.columns[0].to_pylist() == [None, 7] and ints.cells_fixed == 0
    junk = parse_block(b"1,oops\n2,1.#IND\n", 2, ",", False, {0: pa.int64(), 1: pa.float32()})
    assert junk.columns[1].to_pylist() == [None, None] and junk.cells_fixed == 1
