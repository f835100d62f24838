"""Format ids, content-based detection and reader construction.

Text presets share one engine (`text_engine.TextReader`); binary readers register
themselves in the `# Binary readers` section below with a factory and a sniff function.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import PurePath
from typing import BinaryIO, NamedTuple

from imuflow.settings import Settings
from services.parser.formats.base import FormatError, Limits, Reader
from services.parser.formats.guard import GuardedReader
from services.parser.formats.header import HEAD_BYTES, Layout, read_head, sniff_layout
from services.parser.formats.presets import TEXT_PRESETS
from services.parser.formats.text_engine import TextReader


class BinaryFormat(NamedTuple):
    """A binary reader: how to build one and how to recognise its files."""

    factory: Callable[[], Reader]
    sniff: Callable[[bytes, str], bool]  # (head, filename) -> is this format


FORMAT_IDS: dict[str, str] = {
    **{pid: p.description for pid, p in TEXT_PRESETS.items()},
    "cwa": "Axivity AX3/AX6 .cwa binary (512-byte checksummed blocks; 3, 6 or 9 axes)",
    "geneactiv": "GENEActiv .bin (text header + hex-encoded pages)",
    "gt3x": "ActiGraph .gt3x (ZIP with log.bin records or legacy activity.bin)",
}

# Binary readers ------------------------------------------------------------------------
# Binary formats register here: id -> BinaryFormat(factory, sniff). They are tried before
# the text presets, in this order, on the first 64 KiB of the file.
# Imported here, not at the top, so that this section stays the binary readers' own.
from services.parser.formats import axivity_wav, cwa, geneactiv, gt3x  # noqa: E402

FORMAT_IDS[axivity_wav.FORMAT_ID] = "Axivity OMGUI WAV export (int16 frames, INFO metadata)"

BINARY_READERS: dict[str, BinaryFormat] = {
    cwa.FORMAT_ID: BinaryFormat(cwa.CwaReader, cwa.sniff),
    gt3x.FORMAT_ID: BinaryFormat(gt3x.Gt3xReader, gt3x.sniff),
    geneactiv.FORMAT_ID: BinaryFormat(geneactiv.GeneactivReader, geneactiv.sniff),
    axivity_wav.FORMAT_ID: BinaryFormat(axivity_wav.AxivityWavReader, axivity_wav.sniff),
}
# ----------------------------------------------------------------------------------------

_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive (decompress it first)"),
    (b"PK\x03\x04", "a ZIP archive (upload the CSV files inside it)"),
    (b"RIFF", "a RIFF/WAV file"),
)


def _looks_binary(head: bytes) -> bool:
    sample = head[:8192].replace(b"\x00", b"")
    if not sample:
        return bool(head)
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13))
    return controls > len(sample) // 20


def _sto_reason(head: bytes, filename: str) -> str | None:
    """Why an OpenSim .sto table cannot be read, or None if this is not one."""
    text = head[:4096].decode("latin-1")
    has_endheader = re.search(r"^endheader\s*$", text, re.MULTILINE) is not None
    if not has_endheader and PurePath(filename).suffix.lower() != ".sto":
        return None
    if "Quaternion" in text or "orientation" in filename.lower():
        return "the file carries no raw IMU samples (orientations only)"
    return (
        "OpenSim .sto tables (vectors packed inside cells) are not supported; export the raw IMU data as CSV"
    )


def _text_preset(layout: Layout) -> str:
    names = [n.lower() for n in layout.names]
    preamble = "\n".join(layout.preamble)
    if preamble.startswith("Format=") or any(n.count("/") >= 2 for n in names):
        return "apdm"
    if "actilife" in preamble.lower() or "actigraph" in preamble.lower():
        return "actilife_csv"
    if "packetcounter" in names or (preamble.startswith("//") and "acc_x" in names):
        return "xsens"
    if layout.header_line.lstrip().startswith("#") and any("rs_s" in n for n in names):
        return "euroc"
    if names[:2] == ["time", "seconds_elapsed"]:
        return "sensor_logger"
    if layout.header_line.startswith('"') and names and names[0] == "time (s)":
        return "phyphox"
    return "generic_csv"


def detect_file(f: BinaryIO, filename: str) -> str:
    """Return the format id of an open file from its head (`header.read_head`); `f` is left at 0."""
    head, complete = read_head(f)
    return detect_format(head, filename, complete=complete)


def detect_format(head: bytes, filename: str, *, complete: bool | None = None) -> str:
    """Return the format id for a file from its first ~64 KiB; raise FormatError if none.

    `complete` says whether `head` is the whole file (by default: shorter than 64 KiB).
    """
    for format_id, binary in BINARY_READERS.items():
        if binary.sniff(head, filename):
            return format_id
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise FormatError(f"the file is {what}, not an IMU recording")
    if not head.strip():
        raise FormatError("the file is empty")
    if _looks_binary(head):
        raise FormatError(
            "the file is binary data of a kind we do not read; supported: " + ", ".join(sorted(FORMAT_IDS))
        )
    if reason := _sto_reason(head, filename):
        raise FormatError(reason)
    if head.lstrip(b"\xef\xbb\xbf").startswith(b"Device Identity"):
        raise FormatError("GENEActiv .bin files need the geneactiv reader, which is not installed")
    layout = sniff_layout(head, complete=len(head) < HEAD_BYTES if complete is None else complete)
    return _text_preset(layout)


def read_limits(settings: Settings) -> Limits:
    """The readers' bounds (SPEC §7 "Limits and fairness") from the settings."""
    return Limits(
        max_content_bytes=settings.max_upload_bytes,
        max_inflate_ratio=settings.max_inflate_ratio,
        max_bytes_without_sample=settings.max_bytes_without_sample,
    )


def make_reader(format_id: str) -> Reader:
    """A fresh reader for `format_id`, behind the no-sample guard; FormatError lists the valid ids."""
    if format_id in TEXT_PRESETS:
        return GuardedReader(TextReader(TEXT_PRESETS[format_id]))
    if format_id in BINARY_READERS:
        return GuardedReader(BINARY_READERS[format_id].factory())
    if format_id in FORMAT_IDS:
        raise FormatError(f"the {format_id!r} reader is not available in this installation")
    raise FormatError(f"unknown format {format_id!r}; valid formats: " + ", ".join(sorted(FORMAT_IDS)))
