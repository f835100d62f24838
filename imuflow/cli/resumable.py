"""`imuflow upload`'s client of ingest's resumable uploads (tus 1.0.0, SPEC §7).

The file goes up in PATCHes of `CHUNK` bytes, each with its sha1 (`Upload-Checksum`). A
dropped connection, a 5xx or an ingest restart is retried with backoff
(`imuflow.retrying.patiently`, started afresh after every PATCH that lands): the client asks
the server for its offset (HEAD) and continues from there. The upload's URL is kept in
`DATA_DIR/uploads.json`, keyed by the file's absolute path, size and mtime, until the
upload is finished, so running the same command again after the CLI itself was killed
continues where it stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
from tenacity import Retrying

from imuflow import retrying
from imuflow.cli.client import CliError, StackClient

CHUNK = 8 * 1024 * 1024  # as ingest's S3 part: each PATCH is one part
PIECE = 64 * 1024  # what one write hands httpx (and the rate limiter's step)
TUS = {"Tus-Resumable": "1.0.0"}
RETRYABLE = {408, 409, 423, 429, 460, 500, 502, 503, 504}
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 10.0
GIVE_UP_AFTER = 300.0  # seconds without any progress


class UploadUrls:
    """The URLs of unfinished uploads, in a small JSON file (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(file: Path) -> str:
        """The file as it is now: a changed file is a new upload."""
        st = file.stat()
        return f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}"

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def get(self, key: str) -> str | None:
        """The stored URL, if any."""
        return self._load().get(key)

    def put(self, key: str, url: str | None) -> None:
        """Store (or, with None, forget) the URL of `key`."""
        data = self._load()
        if url is None:
            data.pop(key, None)
        else:
            data[key] = url
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.path)


@dataclass
class Outcome:
    """What the finished upload became."""

    file_id: str
    resumed_from: int


ProgressFn = Callable[[int], None]


class ResumableUpload:
    """Uploads one file with tus, resuming by itself."""

    def __init__(
        self,
        client: StackClient,
        path: Path,
        metadata: dict[str, str],
        *,
        chunk: int = CHUNK,
        limit_rate: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.path = path
        self.size = path.stat().st_size
        self.metadata = {"filename": path.name, **metadata}
        self.chunk = chunk
        self.limit_rate = limit_rate
        self.sleep = sleep
        self.urls = UploadUrls(client.settings.data_dir / "uploads.json")
        self.endpoint = f"{client.settings.ingest_base}/api/uploads"

    def run(self, progress: ProgressFn) -> Outcome:
        """Upload until every byte is stored; the file id it became."""
        if self.size == 0:
            raise CliError(f"{self.path} is empty")
        key = self.urls.key(self.path)
        with httpx.Client(
            headers={**self.client.headers, **TUS}, timeout=httpx.Timeout(30.0, write=None)
        ) as http:
            url, offset, file_id = self._start(http, key)
            resumed_from = offset
            progress(offset)
            while file_id is None:
                offset, file_id = self._step(http, url, offset, progress)
        self.urls.put(key, None)
        return Outcome(file_id, resumed_from)

    def _patience(self, what: str) -> Retrying:
        """Retries of one step forward: backoff from the start, given up after GIVE_UP_AFTER s."""
        return retrying.patiently(
            what,
            transient=_worth_retrying,
            within=GIVE_UP_AFTER,
            initial=BACKOFF_INITIAL,
            maximum=BACKOFF_MAX,
            asked=lambda exc: exc.after if isinstance(exc, _Retry) else None,
            sleep=self.sleep,
        )

    def _step(
        self, http: httpx.Client, url: str, offset: int, progress: ProgressFn
    ) -> tuple[int, str | None]:
        """One PATCH forward. After a failure ask the server where it stands (HEAD) and go on
        from there, until GIVE_UP_AFTER seconds pass without a PATCH landing."""
        try:
            for attempt in self._patience("uploading"):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        offset, file_id = self._head(http, url)
                        progress(offset)
                        if file_id is not None:
                            return offset, file_id
                    return self._patch(http, url, offset, progress)
        except _Gone as exc:
            raise CliError(f"{exc}; run the command again to start over") from exc
        except _Retry as exc:
            raise CliError(
                f"upload stalled for {GIVE_UP_AFTER:.0f}s ({exc}); run the same command to resume"
            ) from exc
        raise AssertionError("tenacity ended without an outcome")

    def _start(self, http: httpx.Client, key: str) -> tuple[str, int, str | None]:
        """Resume the stored upload of this file, or create one."""
        url = self.urls.get(key)
        if url is not None:
            try:
                offset, file_id = self._head(http, url)
                return url, offset, file_id
            except _Gone:
                self.urls.put(key, None)
        url = self._create(http)
        self.urls.put(key, url)
        return url, 0, None

    def _create(self, http: httpx.Client) -> str:
        try:
            for attempt in self._patience("starting the upload"):
                with attempt:
                    return self._post(http)
        except _Retry as exc:
            raise CliError(f"could not start the upload ({exc})") from exc
        raise AssertionError("tenacity ended without an outcome")

    def _post(self, http: httpx.Client) -> str:
        headers = {"Upload-Length": str(self.size), "Upload-Metadata": _metadata(self.metadata)}
        try:
            answer = http.post(self.endpoint, headers=headers)
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach ingest: {exc}") from exc
        if answer.status_code == 201:
            return urljoin(self.endpoint, answer.headers["location"])
        if answer.status_code in RETRYABLE:
            raise _Retry.of(answer)
        raise CliError(f"upload refused ({answer.status_code}): {_detail(answer)}")

    def _head(self, http: httpx.Client, url: str) -> tuple[int, str | None]:
        try:
            answer = http.head(url)
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach ingest: {exc}") from exc
        if answer.status_code in (404, 410):
            raise _Gone(f"the upload is gone ({answer.status_code})")
        if answer.status_code != 200:
            raise _Retry(f"HEAD answered {answer.status_code}")
        return int(answer.headers["upload-offset"]), answer.headers.get("imuflow-file-id")

    def _patch(
        self, http: httpx.Client, url: str, offset: int, progress: ProgressFn
    ) -> tuple[int, str | None]:
        with self.path.open("rb") as f:
            f.seek(offset)
            body = f.read(min(self.chunk, self.size - offset))
        digest = base64.b64encode(hashlib.sha1(body).digest()).decode()
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha1 {digest}",
        }
        try:
            answer = http.patch(url, content=self._pieces(body, offset, progress), headers=headers)
        except httpx.TransportError as exc:
            raise _Retry(f"connection lost: {exc}") from exc
        if answer.status_code == 204:
            new = int(answer.headers["upload-offset"])
            progress(new)
            return new, answer.headers.get("imuflow-file-id")
        if answer.status_code in RETRYABLE:
            raise _Retry.of(answer)
        if answer.status_code in (404, 410):
            raise CliError(
                f"the upload is gone ({answer.status_code}): {_detail(answer)}; run the command again"
            )
        raise CliError(f"upload refused ({answer.status_code}): {_detail(answer)}")

    def _pieces(self, body: bytes, offset: int, progress: ProgressFn) -> Iterator[bytes]:
        """The body in small pieces, at most `limit_rate` bytes/s, reporting what was sent."""
        started = time.monotonic()
        for at in range(0, len(body), PIECE):
            piece = body[at : at + PIECE]
            if self.limit_rate > 0:
                ahead = (at + len(piece)) / self.limit_rate - (time.monotonic() - started)
                if ahead > 0:
                    self.sleep(ahead)
            yield piece
            progress(offset + at + len(piece))


class _Retry(Exception):
    """A failure worth retrying after a pause (`after` seconds at least, if the server said)."""

    def __init__(self, reason: str, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = after

    @classmethod
    def of(cls, answer: httpx.Response) -> _Retry:
        """A retryable answer, with its Retry-After (in seconds) if it gave one."""
        retry_after = answer.headers.get("retry-after", "").strip()
        after = float(retry_after) if retry_after.isdigit() else None
        return cls(f"{answer.status_code}: {_detail(answer)}", after)


class _Gone(_Retry):
    """The server no longer knows the upload (expired or terminated)."""


def _worth_retrying(error: BaseException) -> bool:
    return isinstance(error, _Retry) and not isinstance(error, _Gone)


def _metadata(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
