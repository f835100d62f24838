"""Header-row detection past preambles, delimiter sniffing and units rows."""

from __future__ import annotations

import pytest

from services.parser.formats.base import FormatError
from services.parser.formats.header import is_number, sniff_layout
from tests.parser.formats.text_helpers import DATA, actilife_raw, phyphox_semicolon


def test_numbers_in_logger_notations() -> None:
    for text in ("1.003170490E0", "5.40E-05", "04097", "-1", ".5", " 3 "):
        assert is_number(text)
    assert is_number("1,5", decimal_comma=True) and not is_number("1,5")
    assert not is_number("abc") and not is_number("")


def test_xsens_preamble_and_tab() -> None:
    layout = sniff_layout((DATA / "opensim_MT_012005D6_009-001_00B421E6.txt").read_bytes(), True)
    assert layout.delimiter == "\t" and len(layout.preamble) == 5
    assert layout.names[0] == "PacketCounter" and layout.data_line_no == 7


def test_actilife_preamble_crlf() -> None:
    layout = sniff_layout(actilife_raw(), True)
    assert layout.delimiter == "," and len(layout.preamble) == 10
    assert layout.names == ["Accelerometer X", "Accelerometer Y", "Accelerometer Z"]


def test_quoted_header_semicolon_decimal_comma() -> None:
    layout = sniff_layout(phyphox_semicolon(), True)
    assert (layout.delimiter, layout.decimal_comma) == (";", True)
    assert layout.names[0] == "Time (s)"


def test_units_row_and_apdm_format7() -> None:
    units = sniff_layout((DATA / "opensim_imuData01.csv").read_bytes()[:65536], False)
    assert units.names[1] == "Static/Acceleration/X" and units.units[1] == "m/s^2"
    f7 = sniff_layout((DATA / "opensim_apdm_format7.csv").read_bytes(), True)
    assert f7.names[:2] == ["Time", "Lumbar/Accelerometer/X"]
    assert f7.names[15 + 3] == "Right Ankle/Gyroscope/X"


def test_space_runs_are_empty_fields() -> None:
    data = b"a b c d\n1   4\n2   5\n3   6\n"
    layout = sniff_layout(data, True)
    assert layout.delimiter == " " and layout.sample_rows[0] == ["1", "", "", "4"]


def test_partial_head_drops_the_cut_line() -> None:
    layout = sniff_layout(b"t,ax,ay\n0,1,2\n1,1,2\n2,1,2\n3,1", False)
    assert len(layout.sample_rows) == 3


def test_no_data_is_an_error() -> None:
    with pytest.raises(FormatError):
        sniff_layout(b"just some text\nmore text\n", True)
