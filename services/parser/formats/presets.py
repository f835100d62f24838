"""The delimited-text presets: what each one assumes where the file is silent."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.parser.formats.units import ACC, GYR, MAG


@dataclass(frozen=True)
class Preset:
    """Defaults a text format brings where its files do not name units or time."""

    format_id: str
    description: str
    default_units: dict[str, str] = field(default_factory=dict)
    time_unit: str | None = None  # unit of the time column when the header gives none


_SI = {ACC: "m/s^2", GYR: "rad/s", MAG: "uT"}

TEXT_PRESETS: dict[str, Preset] = {
    p.format_id: p
    for p in (
        Preset(
            "generic_csv",
            "Delimited text with a header row (time + ax..gz[, mx..]; units in names)",
        ),
        Preset(
            "euroc",
            "EuRoC MAV / TUM-VI imu0/data.csv: '#timestamp [ns]', gyro then accel",
            _SI,
            "ns",
        ),
        Preset(
            "phyphox",
            "phyphox export: quoted 'Time (s)' header, comma/semicolon/tab, one sensor per file",
            _SI,
            "s",
        ),
        Preset(
            "sensor_logger",
            "Sensor Logger app: time (ns epoch), seconds_elapsed, z, y, x per sensor file",
            _SI,
            "ns",
        ),
        Preset(
            "xsens",
            "Xsens MT Manager text export: '//' preamble, PacketCounter, Acc/Gyr/Mag columns",
            {ACC: "m/s^2", GYR: "rad/s", MAG: "a.u."},
        ),
        Preset(
            "actilife_csv",
            "ActiLife RAW CSV export: 10-line preamble, Accelerometer X/Y/Z in g",
            {ACC: "g"},
        ),
        Preset(
            "apdm",
            "APDM Motion Studio CSV: several sensors side by side (Format=7 or units row)",
            _SI,
            "us",
        ),
    )
}
