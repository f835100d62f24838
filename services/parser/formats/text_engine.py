"""The delimited-text reader: one engine behind every text preset.

It sniffs the layout from the first 64 KiB, maps columns by name, then streams the rest
in blocks of whole lines that pyarrow parses in C++; the Python work per block is a few
vectorised numpy operations, so throughput tracks pyarrow's own.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import PurePath
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.parser.formats.base import (
    VALUE_COLUMNS,
    FileInfo,
    FormatError,
    ReadOptions,
    ResumePoint,
    SampleBatch,
)
from services.parser.formats.blocks import Block, parse_block
from services.parser.formats.chunker import LineChunker
from services.parser.formats.columns import ColumnMap, map_columns, sensor_of_word
from services.parser.formats.header import Layout, read_head, sniff_layout
from services.parser.formats.localtime import load_zone, local_to_utc_ns
from services.parser.formats.presets import Preset
from services.parser.formats.timebase import (
    TimePlan,
    chunk_times,
    mostly_numeric,
    plan_numeric_time,
    plan_text_time,
    rate_from_preamble,
    start_from_preamble,
    time_values,
    utc_columns_filled,
    utc_times,
)

_FIELD_TYPES = {
    "int": pa.int64(),
    "float": pa.float64(),
    "decimal": pa.string(),
    "text": pa.string(),
    "counter": pa.float64(),
    "fine": pa.float64(),
}
_MAX_EXAMPLE = 60
# Written by ingest above each stream of a phyphox / Sensor Logger ZIP (services/ingest/
# timeanchors.py): "relative ns=Unix ns" pairs, each valid from its relative time on.
_ANCHORS = re.compile(r"^# imuflow time anchors \(([^)]*)\): ((?:-?\d+=\d+ ?)+)$")
_EPOCH = dt.datetime(1970, 1, 1)


def axis_sensor(options: ReadOptions) -> str | None:
    """The sensor for columns named only by axis: the upload's field, else the file name."""
    if options.sensor:
        quantity = sensor_of_word(options.sensor)
        if quantity is None:
            raise FormatError(
                f"unknown sensor {options.sensor!r}: use accelerometer, gyroscope or magnetometer"
            )
        return quantity
    return sensor_of_word(PurePath(options.filename).stem) if options.filename else None


def _not_imu_file(filename: str) -> str | None:
    stem = PurePath(filename).stem.lower()
    if "gravity" in stem:
        return "this is the phone's gravity estimate, not raw IMU samples"
    if "orientation" in stem or "quaternion" in stem:
        return "the file carries no raw IMU samples (orientations only)"
    return None


class TextReader:
    """Reads any delimited-text IMU file; the preset fills in what the file leaves out."""

    def __init__(self, preset: Preset) -> None:
        self.format_id = preset.format_id
        self._preset = preset

    def open(self, f: BinaryIO, options: ReadOptions, resume: ResumePoint | None) -> FileInfo:
        """Sniff the layout and time base, then position at the data (or the resume point)."""
        load_zone(options.timezone)  # fail fast on a bad zone name
        head, complete = read_head(f)
        layout = sniff_layout(head, complete=complete)
        total = f.seek(0, 2)
        try:
            cmap = map_columns(layout.names, layout.units, self._preset.default_units, axis_sensor(options))
        except FormatError as exc:
            reason = None if options.sensor else _not_imu_file(options.filename)
            raise FormatError(reason or str(exc)) from exc
        plan, time_field, time_warnings = self._plan_time(layout, cmap, options)
        self._anchors = None if plan.epoch or plan.kind == "none" else _anchors(layout.preamble)
        self._layout, self._cmap, self._plan, self._time_field = layout, cmap, plan, time_field
        self._types = {c.field: pa.float32() for c in cmap.imu}
        # The column that fills each (group, value) cell: the last one mapped to it, as
        # when every column was written in turn.
        self._writers = list({(c.group, c.canon): c for c in cmap.imu}.values())
        self._unmapped = np.ones((len(cmap.groups), len(VALUE_COLUMNS)), dtype=bool)
        for c in self._writers:
            self._unmapped[c.group, c.canon] = False
        if time_field is not None:
            self._types[time_field] = _FIELD_TYPES[plan.kind]
        if plan.kind == "utc":
            self._types.update(dict.fromkeys(cmap.utc_fields.values(), pa.float64()))
        start = layout.data_offset
        self._state: dict[str, Any] = {
            "row": 0,
            "line": layout.data_line_no,
            "counts": [0] * len(cmap.groups),
            "clock": {},
            "warned": [],
        }
        self._done_before = 0
        if resume is not None:
            start = max(resume.offset, layout.data_offset)
            self._state = copy.deepcopy(dict(resume.state))
            self._done_before = resume.samples_done
        f.seek(start)
        sample_len = sum(len(layout.delimiter.join(r)) + 1 for r in layout.sample_rows)
        self._chunker = LineChunker(f, start, sample_len / max(1, len(layout.sample_rows)))
        units = {VALUE_COLUMNS[c.canon]: c.unit for c in cmap.imu}
        return FileInfo(
            format_id=self.format_id,
            bytes_total=total,
            sample_count=None,
            units=units,
            warnings=tuple(cmap.warnings + time_warnings),
            time_base="epoch" if self._anchors is not None else plan.time_base,
        )

    def _plan_time(
        self, layout: Layout, cmap: ColumnMap, options: ReadOptions
    ) -> tuple[TimePlan, int | None, list[str]]:
        rows, pre = layout.sample_rows, layout.preamble
        if utc_columns_filled(rows, cmap.utc_fields):  # Xsens UTC output: absolute time
            return TimePlan("utc", epoch=True), None, []
        values = time_values(rows, cmap.time_field, layout.decimal_comma)
        if numeric := mostly_numeric(values):
            plan, warnings = plan_numeric_time(numeric, cmap.time_unit, self._preset.time_unit)
            return plan, cmap.time_field, warnings
        _, order = start_from_preamble(pre)
        if values and (text_plan := plan_text_time(values, order, options.timezone)):
            return text_plan, cmap.time_field, []
        if mostly_numeric(time_values(rows, cmap.fine_field)):
            return TimePlan("fine"), cmap.fine_field, []
        rate = rate_from_preamble(pre)
        if cmap.counter_field is not None and rate:
            return TimePlan("counter", rate_hz=rate), cmap.counter_field, []
        if rate:
            start, _ = start_from_preamble(pre)
            if start is None:
                return TimePlan("synth", rate_hz=rate), None, []
            wall_ns = np.array([int((start - _EPOCH).total_seconds()) * 10**9], dtype=np.int64)
            utc = local_to_utc_ns(wall_ns, load_zone(options.timezone))
            return TimePlan("synth", epoch=True, rate_hz=rate, start_ns=int(utc[0])), None, []
        warning = "the file has no time column and no sample rate; sample times are left empty"
        return TimePlan("none"), None, [warning]

    def batches(self, target_samples: Callable[[], int]) -> Iterator[SampleBatch]:
        """Yield batches of whole lines, about `target_samples()` samples each."""
        n_groups = max(1, len(self._cmap.groups))
        while True:
            data, end, eof = self._chunker.next_block(max(1, target_samples() // n_groups))
            if not data:
                break
            yield self._batch(data, end)
            if eof:
                break
        if self._done_before + sum(self._state["counts"]) == 0:
            raise FormatError(
                "the file contains no usable IMU samples: every data row lacked numeric "
                "accelerometer, gyroscope or magnetometer values"
            )

    def _warn(self, key: str, text: str, out: list[str]) -> None:
        if key not in self._state["warned"]:
            self._state["warned"].append(key)
            out.append(text)

    def _batch(self, data: bytes | bytearray, end: int) -> SampleBatch:
        layout, cmap, state = self._layout, self._cmap, self._state
        line0 = state["line"]
        state["line"] += self._chunker.last_lines
        if b"\x00" in data:
            data = data.replace(b"\x00", b"")
        if layout.decimal_comma:
            data = data.replace(b",", b".")
        blk = parse_block(data, len(layout.names), layout.delimiter, layout.quoted_data, self._types)
        n, n_groups = blk.n_rows, len(cmap.groups)
        col = blk.columns.get(self._time_field) if self._time_field is not None else None
        if self._plan.kind == "utc":
            t, t_ok = utc_times(blk.columns, cmap.utc_fields, n)
        else:
            t, t_ok = chunk_times(self._plan, col, state["row"], n, state["clock"])
        if self._anchors is not None:
            t = _anchored(t, t_ok, self._anchors)
        state["row"] += n
        vals = np.empty((n, n_groups, len(VALUE_COLUMNS)), dtype=np.float32)
        vals[:, self._unmapped] = np.nan  # every other cell is written just below
        # A row of a group is kept unless all its values are NaN: tracked column by column
        # on the contiguous arrays (a reduction over the 9 values of each row is slower).
        all_nan = np.ones((n, n_groups), dtype=bool)
        for c in self._writers:
            v = blk.columns[c.field].to_numpy(zero_copy_only=False)
            v = v if c.factor == 1.0 else v * np.float32(c.factor)
            vals[:, c.group, c.canon] = v
            np.logical_and(all_nan[:, c.group], np.isnan(v), out=all_nan[:, c.group])
        keep: npt.NDArray[np.bool_] = ~all_nan
        warnings: list[str] = []
        skipped = self._note_damage(blk, keep, t_ok, data, line0, warnings)
        counts = np.asarray(state["counts"], dtype=np.int64)
        sensor: npt.NDArray[np.int16] | None = None
        if n_groups == 1 and bool(keep.all()):
            # The common case (one sensor, every row usable): no gather needed.
            index = np.arange(counts[0], counts[0] + n, dtype=np.int64)
            times, values = t, vals.reshape(n, len(VALUE_COLUMNS))
            state["counts"] = [int(counts[0]) + n]
        else:
            rows, groups = np.nonzero(keep)
            per_group = np.cumsum(keep, axis=0, dtype=np.int64) - 1 + counts
            state["counts"] = [int(x) for x in counts + keep.sum(axis=0)]
            index = per_group[rows, groups].astype(np.int64)
            times, values = t[rows], np.ascontiguousarray(vals[rows, groups])
            if n_groups > 1:
                sensor = groups.astype(np.int16)
        return SampleBatch(
            sample_index=index,
            t_ns=times,
            values=values,
            end_offset=end,
            sensor=sensor,
            sensors=tuple(g or f"sensor{i}" for i, g in enumerate(cmap.groups)) if n_groups > 1 else (),
            rows_skipped=skipped,
            warnings=warnings,
            state=copy.deepcopy(state),
        )

    def _note_damage(
        self,
        blk: Block,
        keep: npt.NDArray[np.bool_],
        t_ok: npt.NDArray[np.bool_],
        data: bytes | bytearray,
        line0: int,
        warnings: list[str],
    ) -> int:
        """Count skipped rows and emit the first few reasons; cheap when nothing is wrong."""
        empty_rows = np.flatnonzero(~keep.any(axis=1))
        for number, text in blk.bad_rows[:1]:
            where = f"line {line0 + number - 1}" if number else "a line"
            self._warn(
                "fields",
                f"{where} has the wrong number of fields and was skipped: {text[:_MAX_EXAMPLE]!r}",
                warnings,
            )
        if empty_rows.size and "values" not in self._state["warned"]:
            # Finding the row's line walks the block in Python: only for the one warning.
            line, text = _row_line(data, int(empty_rows[0]), blk, line0)
            self._warn(
                "values",
                f"rows with no usable IMU values are skipped (first at line {line}: {text!r})",
                warnings,
            )
        if blk.cells_fixed:
            self._warn("cells", "values that are not numbers are stored as empty (NULL)", warnings)
        if self._plan.kind != "none" and not bool(t_ok[keep.any(axis=1)].all()):
            self._warn(
                "time",
                "rows whose time cannot be read keep their values with an empty time",
                warnings,
            )
        return int(empty_rows.size) + len(blk.bad_rows)


def _anchors(preamble: list[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None:
    """The time anchors line of a phone-app stream, as (relative ns, Unix ns) arrays."""
    for line in preamble:
        if m := _ANCHORS.match(line.strip()):
            pairs = sorted(tuple(int(x) for x in p.split("=")) for p in m.group(2).split())
            return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)
    return None


def _anchored(
    t: npt.NDArray[np.int64],
    ok: npt.NDArray[np.bool_],
    anchors: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
) -> npt.NDArray[np.int64]:
    """Relative times made absolute: each from the latest START at or before it (a pause
    in phyphox leaves the relative column running on, the absolute one jumps)."""
    rel, unix = anchors
    k = np.clip(np.searchsorted(rel, t, side="right") - 1, 0, rel.size - 1)
    return np.where(ok, unix[k] + (t - rel[k]), t).astype(np.int64)


def _row_line(data: bytes | bytearray, row: int, blk: Block, line0: int) -> tuple[int, str]:
    """Line number and text of parsed row `row` (only called for damaged blocks)."""
    bad = {number for number, _ in blk.bad_rows if number}
    seen = -1
    lines: list[bytes | bytearray] = list(data.split(b"\n"))
    for i, raw in enumerate(lines):
        if not raw.strip(b"\r") or (i + 1) in bad:
            continue
        seen += 1
        if seen == row:
            return line0 + i, raw.decode("utf-8", "replace").strip()[:_MAX_EXAMPLE]
    return line0, ""
