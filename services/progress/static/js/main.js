// The page: sign-in, uploads straight to ingest, and the live file list over SSE.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { DetailView } from "./detail.js";
import { FileList, progressBar, setBar, statusLabel } from "./files.js";
import { ResumableUpload } from "./resumable.js";

const $ = (id) => document.getElementById(id);
const UPLOADS_AT_ONCE = 3;
const EVENT_TYPES = ["progress", "completed", "failed", "cancelled"];

const state = { config: null, source: null, retryTimer: null, queue: [], active: 0 };

const detail = new DetailView($("detail"), $("detail-body"), $("detail-title"));
const files = new FileList($("files"), {
  onOpen: (id) => detail.open(files.record(id), document.activeElement),
  onAction: (id, action) => runAction(id, action),
  onStatusChange: (record) => announce(`${record.filename}: ${statusLabel(record.status).toLowerCase()}`),
});

function announce(text) {
  // Replacing the text (not appending) keeps the live region short for screen readers.
  $("announcer").textContent = text;
}

function refreshCount() {
  const n = files.size;
  $("file-count").textContent = n ? `${fmt.count(n)} file${n === 1 ? "" : "s"}` : "";
  $("no-files").hidden = n > 0;
}

function setLive(kind, text) {
  const badge = $("live-state");
  badge.dataset.state = kind;
  badge.textContent = text;
}

// --- session -----------------------------------------------------------------------

function showSignIn(message) {
  stopStream();
  files.clear();
  $("workspace").hidden = true;
  $("session-bar").hidden = true;
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("token").focus();
}

async function showWorkspace() {
  const items = await api.allFiles();
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  $("session-bar").hidden = false;
  for (const record of items) files.apply(record);
  refreshCount();
  startStream();
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("token");
  const token = input.value.trim();
  if (!token) {
    showSignIn("Enter your access token.");
    return;
  }
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api.signIn(token);
    input.value = "";
    await showWorkspace();
  } catch (err) {
    showSignIn(err.status === 401 ? `Sign-in failed: ${err.message}.` : `Sign-in failed: ${err.message}`);
  } finally {
    button.disabled = false;
  }
});

$("sign-out").addEventListener("click", async () => {
  try {
    await api.signOut();
  } catch {
    // The cookie may already be gone; signing out locally is what the user asked for.
  }
  detail.forget(detail.id);
  showSignIn("You are signed out.");
});

// --- live stream -------------------------------------------------------------------

function stopStream() {
  clearTimeout(state.retryTimer);
  state.source?.close();
  state.source = null;
}

function onEvent(event) {
  const record = JSON.parse(event.data);
  const id = event.lastEventId ? Number(event.lastEventId) : null;
  if (files.apply(record, id)) {
    detail.update(files.record(record.id));
    refreshCount();
  }
}

// EventSource reconnects by itself after a dropped connection, sending Last-Event-ID, and
// the server replays what was missed. It gives up only on an HTTP error (e.g. 401 once the
// session is revoked): then find out why, and either sign in again or open a new stream.
function startStream() {
  stopStream();
  setLive("connecting", "Connecting…");
  const source = new EventSource("/api/events");
  state.source = source;
  for (const type of EVENT_TYPES) source.addEventListener(type, onEvent);
  source.addEventListener("deleted", (e) => {
    const record = JSON.parse(e.data);
    files.remove(record.id);
    detail.forget(record.id);
    refreshCount();
  });
  source.onopen = () => setLive("live", "Live");
  source.onerror = () => {
    if (source.readyState !== EventSource.CLOSED) {
      setLive("connecting", "Reconnecting…");
      return;
    }
    setLive("offline", "Offline");
    state.retryTimer = setTimeout(async () => {
      try {
        await api.listFiles(null, 1); // only: is the session still good?
        startStream();
      } catch (err) {
        if (err.status === 401) showSignIn("Your session has ended; sign in again.");
        else state.retryTimer = setTimeout(startStream, 3000);
      }
    }, 1000);
  };
}

// --- commands ----------------------------------------------------------------------

async function runAction(id, action) {
  files.message(id, "");
  try {
    if (action === "csv" || action === "parquet") {
      await api.download(id, action);
      files.message(id, `Export as ${action.toUpperCase()} started.`);
      return;
    }
    await api.command(action, id);
    if (action === "delete") {
      const name = files.record(id)?.filename;
      files.remove(id);
      detail.forget(id);
      refreshCount();
      announce(`${name} deleted`);
    }
  } catch (err) {
    if (err.status === 401) {
      showSignIn("Your session has ended; sign in again.");
      return;
    }
    files.message(id, err.message, true);
  }
}

// --- uploads -----------------------------------------------------------------------

function addFiles(list) {
  for (const file of list) {
    const item = document.createElement("li");
    item.className = "upload";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    const info = document.createElement("span");
    info.className = "upload-info muted small";
    info.textContent = `${fmt.bytes(file.size)} · waiting`;
    const bar = progressBar(`Upload of ${file.name}`);
    setBar(bar, 0, false);
    item.append(name, info, bar);
    $("uploads").append(item);
    state.queue.push({ file, item, info, bar });
  }
  pump();
}

function pump() {
  while (state.active < UPLOADS_AT_ONCE && state.queue.length) {
    state.active += 1;
    send(state.queue.shift()).finally(() => {
      state.active -= 1;
      pump();
    });
  }
}

function describe({ sent, total, speed, secondsLeft }) {
  const parts = [`${fmt.bytes(sent)} of ${fmt.bytes(total)}`, fmt.percent((sent / total) * 100)];
  if (speed) parts.push(`${fmt.bytes(speed)}/s`);
  if (secondsLeft !== null && sent < total) parts.push(`${fmt.duration(secondsLeft)} left`);
  return parts.join(" · ");
}

// Upload with tus: progress with speed and time left, pause/resume, retries by itself.
function uploadResumably(file, item, bar, info) {
  return new Promise((resolve, reject) => {
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "btn small ghost upload-toggle";
    toggle.textContent = "Pause";
    toggle.setAttribute("aria-label", `Pause the upload of ${file.name}`);
    const job = new ResumableUpload(state.config.ingest_url, file, {
      onProgress: (p) => {
        setBar(bar, (p.sent / p.total) * 100, false);
        item.dataset.sent = String(p.sent);
        info.textContent = job.paused ? `${describe(p)} · paused` : describe(p);
      },
      onStatus: (text) => {
        info.textContent = `${fmt.bytes(file.size)} · ${text}`;
      },
      onDone: (fileId) => {
        toggle.remove();
        resolve(fileId);
      },
      onError: (err) => {
        toggle.remove();
        reject(err);
      },
    });
    toggle.addEventListener("click", () => {
      if (job.paused) {
        job.resume();
        toggle.textContent = "Pause";
        toggle.setAttribute("aria-label", `Pause the upload of ${file.name}`);
        info.textContent = `${fmt.bytes(file.size)} · resuming…`;
      } else {
        job.pause();
        toggle.textContent = "Resume";
        toggle.setAttribute("aria-label", `Resume the upload of ${file.name}`);
        info.textContent = `${info.textContent.split(" · paused")[0]} · paused`;
      }
    });
    item.append(toggle);
    info.textContent = `${fmt.bytes(file.size)} · uploading`;
    job.start().catch(reject);
  });
}

async function send({ file, item, info, bar }) {
  try {
    const fileId = await uploadResumably(file, item, bar, info);
    setBar(bar, 100, false);
    const record = await api.request("GET", `/api/files/${fileId}`);
    files.apply(record);
    refreshCount();
    announce(`${file.name} uploaded`);
    item.remove();
  } catch (err) {
    if (err.status === 401) {
      showSignIn("Your session has ended; sign in again.");
      return;
    }
    item.classList.add("failed");
    info.textContent = `Upload failed: ${err.message}`;
    info.classList.add("error");
    const dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "btn small ghost";
    dismiss.textContent = "Dismiss";
    dismiss.setAttribute("aria-label", `Dismiss the failed upload of ${file.name}`);
    dismiss.addEventListener("click", () => item.remove());
    item.append(dismiss);
    announce(`Upload of ${file.name} failed: ${err.message}`);
  }
}

$("file-input").addEventListener("change", (e) => {
  addFiles([...e.target.files]);
  e.target.value = "";
});

const zone = $("dropzone");
for (const type of ["dragenter", "dragover"]) {
  zone.addEventListener(type, (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  zone.addEventListener(type, () => zone.classList.remove("over"));
}
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  addFiles([...e.dataTransfer.files]);
});
// A file dropped beside the zone must not make the browser navigate away from the page.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => e.preventDefault());

$("detail-close").addEventListener("click", () => $("detail").close());

// --- start -------------------------------------------------------------------------

async function boot() {
  try {
    state.config = await api.getConfig();
  } catch (err) {
    showSignIn(`The service is not answering (${err.message}); reload to try again.`);
    return;
  }
  try {
    await showWorkspace();
  } catch (err) {
    showSignIn(err.status === 401 ? "" : `Could not load your files: ${err.message}`);
  }
}

boot();
