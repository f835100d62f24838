"""Phone-app ZIP exports (Sensor Logger, phyphox): one upload, one file record per sensor stream.

The upload is already stored, so the ZIP's central directory (at its end) can be read
through a seekable reader of the object (a local file, or ranged GETs on S3). Each
sensor stream is extracted to storage as its own object, named by a new id like any
upload, with its own size and sha256; its display name is the member's base name, which
the parser's text engine reads the sensor from (`Gyroscope.csv`). Member names are never
used as paths. Device containers that are ZIPs themselves (ActiGraph
`.gt3x`/`.agdc`) are left whole for their reader.

Which members are streams: text files (.csv, .txt, .tsv) outside `meta/` whose name
names an IMU sensor (accelerometer, gyroscope, magnetometer, phyphox `Raw Data`, ...).
A stream of a ZIP with a phyphox `meta/time.csv` or a Sensor Logger `Metadata.csv` starts
with one `# imuflow time anchors` line (timeanchors.py): its absolute start time(s).
Skipped and named in the record's warnings: sidecars (`Metadata.csv`, `meta/*`), derived
or non-IMU streams (`Gravity.csv`, `Orientation.csv`, `Location.csv`, `Barometer.csv`,
...), empty members. A ZIP with no text member naming a sensor but some other text
members hands those to the parser (which reads the sensor from their columns).
"""

from __future__ import annotations

import asyncio
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import asyncpg

from imuflow.archives import ArchiveRefused, BoundedMember, check_directory, check_member
from imuflow.filewarnings import clip
from imuflow.settings import Settings
from imuflow.storage import Storage
from services.ingest import repository
from services.ingest.multipart import UploadRejected
from services.ingest.storage import UploadSink, sanitize_filename
from services.ingest.timeanchors import anchor_line

SEVERAL_SENSORS = "a ZIP of several sensor files cannot take one `sensor`; each file's name says its sensor"
ZIP_MAGIC = b"PK\x03\x04"
MAX_MEMBERS = 2000  # central-directory entries we are willing to look at
MAX_DIRECTORY_BYTES = 1 << 20  # and the bytes of that directory (checked before zipfile reads it)
MAX_STREAMS = 64  # sensor streams one upload may become
CHUNK = 1 << 20
TEXT_SUFFIXES = {".csv", ".txt", ".tsv"}
DEVICE_MEMBERS = {"log.bin", "activity.bin", "info.txt"}
DEVICE_SUFFIXES = (".gt3x", ".agdc")
IMU_WORDS = ("accel", "gyro", "magnet", "rawdata", "imu", "acceleration", "rotationrate")
NOT_IMU_WORDS = (
    "gravity",
    "orientation",
    "quaternion",
    "metadata",
    "location",
    "annotation",
    "barometer",
    "pressure",
    "battery",
    "brightness",
    "light",
    "microphone",
    "pedometer",
    "heading",
    "compass",
    "proximity",
    "wrist",
)


@dataclass
class Plan:
    """What to do with a ZIP's members."""

    streams: list[zipfile.ZipInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_device_container(names: list[str], filename: str) -> bool:
    """A ZIP that is one recording of a device format (read whole by its parser)."""
    if filename.lower().endswith(DEVICE_SUFFIXES):
        return True
    return any(PurePosixPath(n).name.lower() in DEVICE_MEMBERS for n in names)


def _squash(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _hidden(part: str) -> bool:
    return part.startswith(".") and part not in (".", "..")  # '..' is only a name here


def classify(info: zipfile.ZipInfo) -> str:
    """'stream', 'text' (a text member naming no sensor) or 'skip' for one member."""
    path = PurePosixPath(info.filename.replace("\\", "/"))
    parts = [p.lower() for p in path.parts]
    if info.is_dir() or any(p in ("meta", "__macosx") or _hidden(p) for p in parts):
        return "skip"
    if path.suffix.lower() not in TEXT_SUFFIXES or info.file_size == 0:
        return "skip"
    stem = _squash(path.stem)
    if any(w in stem for w in NOT_IMU_WORDS):
        return "skip"
    return "stream" if any(w in stem for w in IMU_WORDS) else "text"


def _refused(exc: ArchiveRefused) -> UploadRejected:
    return UploadRejected(413 if exc.kind == "size" else 400, str(exc))


def plan_archive(
    upload: BinaryIO | Path, filename: str, max_bytes: int, max_ratio: float = 100.0
) -> Plan | None:
    """The streams of a phone-app ZIP, None when the upload is not such a ZIP.

    `upload` is a seekable reader of the stored upload (a local file or ranged GETs).
    """
    if isinstance(upload, Path):
        with upload.open("rb") as opened:
            return plan_archive(opened, filename, max_bytes, max_ratio)
    f = upload
    f.seek(0)
    if f.read(4) != ZIP_MAGIC:
        return None
    try:  # before zipfile reads (and trusts) the whole directory
        check_directory(f, MAX_MEMBERS, MAX_DIRECTORY_BYTES)
    except ArchiveRefused as exc:
        raise _refused(exc) from exc
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return None  # not readable as a ZIP: the parser gives the reason
    if len(infos) > MAX_MEMBERS:
        raise UploadRejected(400, f"the ZIP has {len(infos)} members; at most {MAX_MEMBERS} are accepted")
    if is_device_container([i.filename for i in infos], filename):
        return None
    kinds = [(info, classify(info)) for info in infos]
    plan = Plan(streams=[i for i, k in kinds if k == "stream"])
    if not plan.streams:
        plan.streams = [i for i, k in kinds if k == "text"]
    chosen = {id(i) for i in plan.streams}
    plan.skipped = [_display(i.filename) for i, _ in kinds if id(i) not in chosen and not i.is_dir()]
    if not plan.streams:
        raise UploadRejected(
            400,
            "the ZIP holds no sensor files (expected e.g. Accelerometer.csv); upload the CSV files inside it",
        )
    if len(plan.streams) > MAX_STREAMS:
        raise UploadRejected(400, f"the ZIP holds {len(plan.streams)} sensor files; at most {MAX_STREAMS}")
    if any(i.flag_bits & 0x1 for i in plan.streams):
        raise UploadRejected(400, "the ZIP is encrypted; export it again without a password")
    declared = sum(i.file_size for i in plan.streams)
    if declared > max_bytes:
        raise UploadRejected(413, f"the ZIP's sensor files unpack to more than {max_bytes} bytes")
    try:
        for info in plan.streams:
            check_member(_display(info.filename), info.file_size, info.compress_size, max_bytes, max_ratio)
    except ArchiveRefused as exc:
        raise _refused(exc) from exc
    return plan


def _display(member: str) -> str:
    return sanitize_filename(member)


@dataclass(frozen=True)
class Extracted:
    """One member written to storage as its own upload."""

    id: uuid.UUID
    filename: str
    size: int
    sha256: str
    uri: str


async def extract(
    f: BinaryIO, plan: Plan, storage: Storage, max_bytes: int, max_ratio: float = 100.0
) -> list[Extracted]:
    """Write each stream to storage, counting real (not declared) sizes against the limits.

    Members are inflated in a worker thread (zipfile and the ranged reader block), one
    chunk at a time, and streamed into storage like an upload.
    """
    done: list[Extracted] = []
    total = 0
    try:
        zf = await asyncio.to_thread(zipfile.ZipFile, f)
        try:
            # phyphox / Sensor Logger sidecars: each stream starts with its time anchors.
            anchors = await asyncio.to_thread(anchor_line, zf)
            for info in plan.streams:
                sink = await UploadSink.open(storage, uuid.uuid4(), max_bytes)
                try:
                    if anchors:
                        sink.write(anchors)
                    raw = await asyncio.to_thread(zf.open, info)
                    try:
                        # Headers can lie: the inflated bytes themselves count, and stop us.
                        member = BoundedMember(
                            raw, _display(info.filename), info.compress_size, max_bytes - total, max_ratio
                        )
                        while chunk := await asyncio.to_thread(member.read, CHUNK):
                            sink.write(chunk)
                            await sink.drain()
                        total += member.inflated
                    finally:
                        raw.close()
                    await sink.finish()
                except BaseException:
                    await sink.discard()
                    raise
                name = _display(info.filename)
                done.append(Extracted(sink.file_id, name, sink.size, sink.sha256, sink.uri))
        finally:
            zf.close()
    except BaseException as exc:
        await discard(storage, done)
        if isinstance(exc, ArchiveRefused):
            raise _refused(exc) from exc
        if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)):
            raise UploadRejected(
                400, f"the ZIP is damaged or uses an unsupported compression: {exc}"
            ) from exc
        raise
    return done


async def discard(storage: Storage, extracted: list[Extracted]) -> None:
    """Remove extracted members (the upload was refused or not recorded)."""
    if extracted:
        await storage.delete([item.uri for item in extracted])


async def accept(
    pool: asyncpg.Pool,
    upload: repository.NewFile,
    storage: Storage,
    settings: Settings,
    first_bytes: bytes | None = None,
) -> dict[str, Any] | None:
    """Record a phone-app ZIP as a parent with one child per stream; None if not such a ZIP."""
    if first_bytes is not None and not first_bytes.startswith(ZIP_MAGIC):
        return None  # not a ZIP: no need to read the stored object back
    limit, ratio = settings.max_upload_bytes, settings.max_inflate_ratio
    f = await storage.open(upload.storage_uri)
    try:
        plan = await asyncio.to_thread(plan_archive, f, upload.filename, limit, ratio)
        if plan is None:
            return None
        if upload.sensor is not None and len(plan.streams) > 1:
            raise UploadRejected(400, SEVERAL_SENSORS)
        parts = await extract(f, plan, storage, limit, ratio)
    finally:
        f.close()
    children = [
        replace(
            upload,
            id=part.id,
            filename=part.filename,
            size_bytes=part.size,
            sha256=part.sha256,
            storage_uri=part.uri,
            duplicate_of=None,
            parent_id=upload.id,
        )
        for part in parts
    ]
    notes = [clip(f"skipped {', '.join(plan.skipped)} (not raw IMU streams)")] if plan.skipped else []
    try:
        return await repository.record_archive(pool, upload, children, notes)
    except BaseException:
        await discard(storage, parts)
        raise
