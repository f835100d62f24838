// Operator page: every user's jobs with live progress. The job list (owner, stuck flag)
// comes from GET /api/admin/jobs; live changes from the SSE stream GET /api/admin/events.
"use strict";

const $ = (id) => document.getElementById(id);
const rows = new Map(); // file id -> { tr, job }
let source = null;
let refreshTimer = null;

async function call(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    const error = new Error(detail);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function cell(tr, index) { return tr.children[index]; }

function fmtRate(r) { return r ? `${Math.round(r).toLocaleString()}/s` : "–"; }
function fmtEta(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${Math.round(s)} s`;
  return `${Math.round(s / 60)} min`;
}

function render(job) {
  let entry = rows.get(job.id);
  if (!entry) {
    const tr = document.createElement("tr");
    for (let i = 0; i < 9; i++) tr.appendChild(document.createElement("td"));
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.appendChild(document.createElement("span"));
    cell(tr, 3).appendChild(bar);
    entry = { tr, job: {} };
    rows.set(job.id, entry);
    $("jobs").prepend(tr);
  }
  const merged = Object.assign(entry.job, job);
  const { tr } = entry;
  const percent = Math.max(0, Math.min(100, Math.round(merged.percent || 0)));
  tr.dataset.status = merged.status;
  tr.dataset.id = merged.id;
  cell(tr, 0).textContent = merged.filename;
  cell(tr, 0).title = merged.id;
  cell(tr, 1).textContent = merged.owner || "…";
  cell(tr, 2).textContent = merged.status + (merged.error_message ? `: ${merged.error_message}` : "");
  const bar = cell(tr, 3).firstChild;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `${merged.filename}: ${percent}%`);
  bar.firstChild.style.width = `${percent}%`;
  const total = merged.sample_count ? ` / ${merged.sample_count.toLocaleString()}` : "";
  cell(tr, 4).textContent = `${(merged.samples_processed || 0).toLocaleString()}${total}`;
  cell(tr, 5).textContent = merged.status === "parsing" ? fmtRate(merged.samples_per_second) : "–";
  cell(tr, 6).textContent = merged.status === "parsing" ? fmtEta(merged.eta_seconds) : "–";
  cell(tr, 7).textContent = String(merged.attempts_used ?? merged.attempts ?? 0);
  const stuck = Boolean(merged.is_stuck) && (merged.status === "parsing" || merged.status === "queued");
  cell(tr, 8).innerHTML = stuck ? '<span class="stuck" title="matches the stuck rule">stuck</span>' : "";
}

function renderCounts(counts) {
  const box = $("counts");
  box.textContent = "";
  for (const status of ["uploaded", "queued", "parsing", "completed", "failed", "cancelled"]) {
    const span = document.createElement("span");
    span.textContent = `${status}: ${counts[status] || 0}`;
    box.appendChild(span);
  }
}

async function refresh() {
  const list = await call("GET", "/api/admin/jobs?limit=500");
  renderCounts(list.counts);
  // Oldest first, so prepend leaves the newest on top.
  for (const job of list.items.slice().reverse()) render(job);
}

function scheduleRefresh(delay) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { await refresh(); } catch (error) { if (error.status === 401 || error.status === 403) showSignIn(error.message); }
  }, delay);
}

function follow() {
  if (source) source.close();
  source = new EventSource("/api/admin/events");
  source.onopen = () => { $("live").dataset.state = "live"; $("live").textContent = "Live"; };
  source.onerror = () => { $("live").dataset.state = "down"; $("live").textContent = "Reconnecting…"; };
  for (const type of ["progress", "completed", "failed", "cancelled"]) {
    source.addEventListener(type, (event) => {
      const record = JSON.parse(event.data);
      const known = rows.has(record.id);
      render(record);
      // A new file or a state change: fetch owners, counts and stuck flags again (debounced).
      if (!known || type !== "progress") scheduleRefresh(known ? 2000 : 300);
    });
  }
}

function showSignIn(message) {
  if (source) source.close();
  $("jobs-view").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  $("token").focus();
}

async function start() {
  try {
    await refresh();
  } catch (error) {
    showSignIn(error.status === 403 ? "This token is not an admin's." : "");
    return;
  }
  $("sign-in").hidden = true;
  $("jobs-view").hidden = false;
  follow();
  setInterval(() => scheduleRefresh(0), 10000); // the stuck flag changes without an event
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await call("POST", "/api/session", { token: $("token").value });
    $("token").value = "";
    await start();
  } catch (error) {
    $("sign-in-error").textContent = error.message;
  }
});

$("reset-stuck").addEventListener("click", async () => {
  try {
    const result = await call("POST", "/api/admin/stuck/reset", {});
    const parts = result.items.map((a) => `${a.action} ${a.file_id.slice(0, 8)}`);
    $("reset-result").textContent = parts.length ? parts.join(", ") : "nothing was stuck";
    await refresh();
  } catch (error) {
    $("reset-result").textContent = `reset failed: ${error.message}`;
  }
});

start();
