// Resumable uploads to ingest over tus 1.0.0 (SPEC §7), with the vendored tus-js-client
// (static/vendor/tus-js-client, loaded as a classic script: window.tus).
//
// Bytes go in 8 MiB PATCHes (one S3 part each on ingest). A dropped connection or an
// ingest restart is retried with backoff and continues from the server's offset. The
// upload's URL is kept in localStorage under the file's fingerprint (name, type, size,
// modification time, endpoint), so after a reload picking the same file again continues
// where it stopped; it is forgotten once the upload is finished.

import { ApiError } from "./api.js";

export const CHUNK = 8 * 1024 * 1024;
// Backoff between attempts (ms); an ingest restart takes a few seconds.
const RETRY_DELAYS = [0, 500, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 20000, 20000, 30000, 30000, 60000];
const SPEED_WINDOW_MS = 5000;

// Bytes per second over the last few seconds, and the time left at that pace.
class Speedometer {
  constructor() {
    this.samples = [];
  }

  add(bytes) {
    const now = performance.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) this.samples.shift();
  }

  reset() {
    this.samples = [];
  }

  perSecond() {
    if (this.samples.length < 2) return null;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : null;
  }
}

// One file's upload. Callbacks: onProgress({sent, total, speed, secondsLeft}), onStatus(text),
// onDone(fileId), onError(ApiError). pause() keeps the upload on the server; resume() continues.
export class ResumableUpload {
  constructor(ingestUrl, file, callbacks) {
    this.file = file;
    this.callbacks = callbacks;
    this.fileId = null;
    this.resumedFrom = null;
    this.paused = false;
    this.speed = new Speedometer();
    this.upload = new window.tus.Upload(file, {
      endpoint: `${ingestUrl}/api/uploads`,
      chunkSize: CHUNK,
      retryDelays: RETRY_DELAYS,
      metadata: { filename: file.name },
      removeFingerprintOnSuccess: true,
      // The session cookie rides along cross-origin (ingest allows this page's origin).
      onBeforeRequest: (req) => {
        const xhr = req.getUnderlyingObject();
        if (xhr) xhr.withCredentials = true;
      },
      onAfterResponse: (req, res) => {
        const id = res.getHeader("Imuflow-File-Id");
        if (id) this.fileId = id;
        if (req.getMethod() === "HEAD" && this.resumedFrom === null) {
          this.resumedFrom = Number(res.getHeader("Upload-Offset")) || 0;
        }
      },
      onShouldRetry: (err, attempt, options) => {
        const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
        // Retry lost connections, 5xx, 409 (another PATCH or a stale offset), 423 and 429.
        const retry = status === 0 || status >= 500 || [409, 423, 429].includes(status);
        if (retry && !this.paused) {
          const wait = options.retryDelays[attempt] || 0;
          this.callbacks.onStatus(`connection lost, trying again${wait ? ` in ${Math.ceil(wait / 1000)} s` : ""}…`);
          this.speed.reset();
        }
        return retry;
      },
      onProgress: (sent, total) => {
        this.speed.add(sent);
        const speed = this.speed.perSecond();
        const secondsLeft = speed ? (total - sent) / speed : null;
        this.callbacks.onProgress({ sent, total, speed, secondsLeft });
      },
      onSuccess: () => this.callbacks.onDone(this.fileId),
      onError: (err) => this.callbacks.onError(toApiError(err)),
    });
  }

  // Continue a stored upload of the same file (after a reload), else start a new one.
  async start() {
    const previous = await this.upload.findPreviousUploads();
    if (previous.length) {
      previous.sort((a, b) => (a.creationTime < b.creationTime ? 1 : -1));
      this.upload.resumeFromPreviousUpload(previous[0]);
      this.callbacks.onStatus("resuming where it stopped…");
    }
    this.upload.start();
  }

  pause() {
    this.paused = true;
    this.speed.reset();
    this.upload.abort(); // aborts the request only: the upload stays on the server
  }

  resume() {
    this.paused = false;
    this.upload.start(); // asks the server for its offset first
  }
}

function toApiError(err) {
  const res = err.originalResponse;
  if (!res) return new ApiError(0, "the upload service could not be reached");
  let detail = `upload failed (${res.getStatus()})`;
  try {
    const body = JSON.parse(res.getBody());
    if (body && typeof body.detail === "string") detail = body.detail;
  } catch {
    // not JSON: keep the status
  }
  return new ApiError(res.getStatus(), detail);
}
