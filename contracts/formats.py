"""The format ids a user may name on upload (`format`), shared by ingest and the parser.

The parser's reader registry must offer exactly these (a test checks it), so ingest can
refuse an unknown id with a 400 before anything is stored.
"""

from __future__ import annotations

FORMATS: dict[str, str] = {
    "generic_csv": "Delimited text with a header row (time + ax..gz[, mx..]; units in names)",
    "euroc": "EuRoC MAV / TUM-VI imu0/data.csv: '#timestamp [ns]', gyro then accel",
    "phyphox": "phyphox export: quoted 'Time (s)' header, comma/semicolon/tab, one sensor per file",
    "sensor_logger": "Sensor Logger app: time (ns epoch), seconds_elapsed, z, y, x per sensor file",
    "xsens": "Xsens MT Manager text export: '//' preamble, PacketCounter, Acc/Gyr/Mag columns",
    "actilife_csv": "ActiLife RAW CSV export: 10-line preamble, Accelerometer X/Y/Z in g",
    "apdm": "APDM Motion Studio CSV: several sensors side by side (Format=7 or units row)",
    "cwa": "Axivity AX3/AX6 .cwa binary (512-byte checksummed blocks; 3, 6 or 9 axes)",
    "geneactiv": "GENEActiv .bin (text header + hex-encoded pages)",
    "gt3x": "ActiGraph .gt3x (ZIP with log.bin records or legacy activity.bin)",
    "axivity_wav": "Axivity OMGUI WAV export (int16 frames, INFO metadata)",
}
