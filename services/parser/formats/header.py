"""Find the header row past any preamble, the delimiter and where the data starts.

Detection is by content, never by a fixed line number: the data block is the first run
of lines that split into the same number of mostly numeric fields, and the header is the
line just above it (with an optional units row in between, as APDM writes).
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO

from services.parser.formats.base import FormatError
from services.parser.formats.units import is_unit_token

HEAD_BYTES = 64 * 1024
# A head grows past HEAD_BYTES while it holds too few lines to sniff (a header line with a
# very long unit, a wide preamble), up to a 1 MiB line (the chunker's MAX_LINE_BYTES) plus
# HEAD_BYTES of rows after it.
MAX_HEAD_BYTES = (1 << 20) + HEAD_BYTES
# Tried in this order; TAB and ';' first because their data lines may also contain ','
# (decimal commas, .sto cells) while ',' data never contains them.
DELIMITERS = ("\t", ";", ",", " ")
_NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")
_DECIMAL_COMMA = re.compile(r"^\s*[+-]?\d+,\d+(?:[eE][+-]?\d+)?\s*$")
_NAN = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "na", "n/a", "null"}
_SAMPLE_ROWS = 64


@dataclass
class Layout:
    """What the head of a delimited-text file says about its shape."""

    delimiter: str
    decimal_comma: bool
    names: list[str]  # one per data field ('' where the header has none)
    units: list[str | None]  # from a units row, per field
    preamble: list[str]  # decoded lines above the header
    header_line: str
    data_offset: int  # byte offset of the first data line
    data_line_no: int  # 1-based line number of the first data line
    sample_rows: list[list[str]] = field(default_factory=list)  # first data rows, split
    quoted_data: bool = False
    head_complete: bool = False  # the head held the whole file


def read_head(f: BinaryIO) -> tuple[bytes, bool]:
    """The first bytes of `f` to sniff, and whether they are the whole file; `f` is left at 0.

    Usually HEAD_BYTES; more (doubling, up to MAX_HEAD_BYTES) while they hold fewer than
    a sniff's worth of lines, so a 600 KB header line still leaves data rows to look at.
    """
    f.seek(0)
    head = f.read(HEAD_BYTES)
    complete = len(head) < HEAD_BYTES
    while not complete and len(head) < MAX_HEAD_BYTES and head.count(b"\n") < _SAMPLE_ROWS + 8:
        more = f.read(min(len(head), MAX_HEAD_BYTES - len(head)))
        complete = not more
        head += more
    f.seek(0)
    return head, complete


def decode_line(raw: bytes, first: bool = False) -> str:
    """Decode one line: UTF-8 (latin-1 if not), without CR, NUL or BOM."""
    raw = raw.replace(b"\x00", b"").rstrip(b"\r")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.lstrip("\ufeff") if first else text


def split_lines(head: bytes, complete: bool) -> tuple[list[str], list[int]]:
    """Decoded complete lines of `head` and the byte offset where each starts."""
    parts = head.split(b"\n")
    if not complete or parts[-1] == b"":
        parts.pop()  # a partial last line (or the empty string after the final newline)
    lines, offsets, pos = [], [], 0
    for i, raw in enumerate(parts):
        lines.append(decode_line(raw, first=i == 0))
        offsets.append(pos)
        pos += len(raw) + 1
    return lines, offsets


def split_fields(line: str, delimiter: str) -> list[str]:
    """Split one line, honouring double quotes only where the line has them."""
    if '"' in line:
        try:
            return next(csv.reader([line.replace("\r", "")], delimiter=delimiter))
        except csv.Error:
            return line.replace('"', "").split(delimiter)  # unbalanced quotes: take them literally
    return line.split(delimiter)


def is_number(text: str, decimal_comma: bool = False) -> bool:
    """True for a number in any notation a logger writes (E notation, zero padding)."""
    return bool(_NUMBER.match(text) or (decimal_comma and _DECIMAL_COMMA.match(text)))


def _numeric_count(fields: list[str], decimal_comma: bool) -> tuple[int, int]:
    nonempty = [f for f in fields if f.strip()]
    numeric = sum(1 for f in nonempty if is_number(f, decimal_comma) or f.strip().lower() in _NAN)
    return numeric, len(nonempty)


def _is_data(fields: list[str], width: int, decimal_comma: bool) -> bool:
    if len(fields) != width:
        return False
    numeric, nonempty = _numeric_count(fields, decimal_comma)
    return numeric >= 2 and numeric * 2 > nonempty


def _looks_numeric(fields: list[str]) -> bool:
    numeric, nonempty = _numeric_count(fields, False)
    return numeric >= 2 and numeric * 2 > nonempty


def _choose_delimiter(lines: list[str]) -> tuple[str, int, bool]:
    best: tuple[int, str, int, bool] | None = None
    for delim in DELIMITERS:
        rows = [split_fields(ln, delim) for ln in lines if ln.strip() and delim in ln]
        if not rows:
            continue
        # The width is that of the rows that look like data: a long preamble of
        # space-separated words (Xsens' 12 `//` lines) must not outvote five data rows.
        datalike = [r for r in rows if _looks_numeric(r)]
        width = Counter(len(r) for r in (datalike or rows)).most_common(1)[0][0]
        if width < 2:
            continue
        dec = delim != "," and any(_DECIMAL_COMMA.match(f) for r in rows[-20:] for f in r)
        n_data = sum(1 for r in rows if _is_data(r, width, dec))
        if n_data and (best is None or n_data > best[0]):
            best = (n_data, delim, width, dec)
    if best is None:
        raise FormatError(
            "no delimited numeric data found: expected rows of numbers separated by "
            "commas, semicolons, tabs or spaces under a header row"
        )
    return best[1], best[2], best[3]


def _clean_name(name: str) -> str:
    return name.strip().strip('"').strip().lstrip("#").lstrip("/").strip()


def _apdm_format7_names(rows: list[list[str]], width: int) -> list[str]:
    """Combine APDM Format=7's id/label, quantity and axis rows into `label/quantity/axis`."""
    labels, quantities, axes = (r + [""] * (width - len(r)) for r in rows[-3:])
    # Each sensor starts at its numeric id; its label follows a few columns later and
    # names the whole group, including the columns before it.
    group_of, names_of, group = [0] * width, [""], 0
    for i in range(1, width):
        cell = labels[i].strip()
        if cell.isdigit():
            group += 1
            names_of.append(cell)
        elif cell and group and names_of[group].isdigit():
            names_of[group] = cell
        group_of[i] = group
    names, qty = [quantities[0].strip()], ""
    for i in range(1, width):
        qty = quantities[i].strip() or qty
        names.append(f"{names_of[group_of[i]]}/{qty}/{axes[i].strip()}")
    return names


def _starts_data(rows: list[list[str]], i: int, width: int, dec: bool) -> bool:
    """Row i is data and so is at least one of the next few (a lone damaged row may follow)."""
    if not _is_data(rows[i], width, dec):
        return False
    following = [r for r in rows[i + 1 : i + 12] if any(c.strip() for c in r)][:8]
    return not following or any(_is_data(r, width, dec) for r in following)


def sniff_layout(head: bytes, complete: bool) -> Layout:
    """Find delimiter, header, units row and data start in the first bytes of a file."""
    lines, offsets = split_lines(head, complete)
    if not lines and head.strip() and not complete:
        raise FormatError(
            f"the first line is longer than {len(head) >> 10:,} KiB: a header that long is not "
            "supported; this does not look like a line-by-line text recording"
        )
    if not lines:
        raise FormatError("the file is empty or has no complete line")
    delim, width, dec = _choose_delimiter(lines[:4000])
    rows = [split_fields(ln, delim) for ln in lines]
    data_i = next((i for i in range(len(rows)) if _starts_data(rows, i, width, dec)), None)
    if data_i is None:
        raise FormatError("no run of numeric data rows found below a header row")
    above = [i for i in range(data_i) if lines[i].strip()]
    if not above:
        raise FormatError(
            "the data has no header row naming its columns; add one such as time,ax,ay,az,gx,gy,gz"
        )
    head_i = above[-1]
    units: list[str | None] = [None] * width
    header_rows = [rows[head_i]]
    if lines[0].startswith("Format=") and len(above) >= 3:
        names = _apdm_format7_names([rows[i] for i in above[-3:]], width)
        head_i = above[-3]
    else:
        cells = [c for c in rows[head_i] if c.strip()]
        if len(above) >= 2 and len(cells) >= 2 and all(is_unit_token(c) for c in cells):
            units = [c.strip() or None for c in rows[head_i]] + [None] * width
            units = units[:width]
            head_i = above[-2]
            header_rows = [rows[head_i]]
        names = [_clean_name(n) for n in header_rows[0]]
    names = (names + [""] * width)[:width]
    sample = [r for r in rows[data_i : data_i + _SAMPLE_ROWS] if len(r) == width]
    return Layout(
        delimiter=delim,
        decimal_comma=dec,
        names=names,
        units=units,
        preamble=lines[:head_i],
        header_line=lines[head_i],
        data_offset=offsets[data_i],
        data_line_no=data_i + 1,
        sample_rows=sample,
        quoted_data=any('"' in lines[i] for i in range(data_i, min(len(lines), data_i + 64))),
        head_complete=complete,
    )
