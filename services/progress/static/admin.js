// Operator page: what needs attention first (stuck and slowing jobs), the live parsers and
// consumer lag, the trends, the last day's failures, then every user's jobs with live
// progress. Lists come from /api/admin/*; live job changes from GET /api/admin/events (SSE).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const rows = new Map(); // file id -> { tr, job }
let source = null;
let refreshTimer = null;
let pollTimer = null;
let trendDays = 7;

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

// --- formatting ------------------------------------------------------------------------

function fmtInt(n) { return Math.round(n || 0).toLocaleString("en-US"); }
function fmtRate(r) { return r ? `${fmtInt(r)}/s` : "–"; }
function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtAgo(iso) {
  if (!iso) return "–";
  return `${fmtSeconds(Math.max(0, (Date.now() - Date.parse(iso)) / 1000))} ago`;
}
function fmtTime(iso) {
  return new Date(iso).toLocaleString("en-GB", { dateStyle: "short", timeStyle: "short", timeZone: "UTC" }) + " UTC";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function badge(kind, text, title) {
  const span = el("span", { class: `badge ${kind}`, text: text || kind });
  if (title) span.title = title;
  return span;
}

function nameCell(filename, id) {
  return el("td", { class: "name" }, filename || "?", el("span", { class: "id", text: id }));
}

function fillTable(table, items, makeRow) {
  const body = table.tBodies[0];
  body.replaceChildren(...items.map(makeRow));
  table.hidden = items.length === 0;
}

// --- needs attention: stuck, then slowing ----------------------------------------------

async function loadAttention() {
  const [stuck, slowing] = await Promise.all([call("GET", "/api/admin/stuck"), call("GET", "/api/admin/slowing")]);
  const stuckIds = new Set(stuck.items.map((j) => j.file_id));
  const items = [
    ...stuck.items.map((j) => ({ kind: "stuck", j })),
    ...slowing.items.filter((j) => !stuckIds.has(j.file_id)).map((j) => ({ kind: "slowing", j })),
  ];
  fillTable($("attention"), items, ({ kind, j }) => {
    const tr = el("tr", { "data-kind": kind });
    let why;
    let since;
    if (kind === "stuck") {
      why = `${j.status}: no progress for ${fmtSeconds(j.stuck_for_seconds)} (limit ${fmtSeconds(j.limit_seconds)})`;
      since = j.stuck_since;
    } else {
      why = `last ${j.slow_batches} batches at ${fmtRate(j.recent_rate)}, median ${fmtRate(j.median_rate)}`;
      since = j.slowing_since;
    }
    const attempts = kind === "stuck" ? `${j.attempts_used} of ${j.max_attempts}` : String(j.attempts);
    tr.append(
      nameCell(j.filename, j.file_id),
      el("td", { text: j.owner }),
      el("td", {}, badge(kind, kind, kind === "stuck" ? "matches the stuck rule" : "early warning: slowing down")),
      el("td", { class: "message", text: why }),
      el("td", { text: fmtAgo(since) }),
      el("td", { text: attempts }),
    );
    return tr;
  });
  $("all-well").hidden = items.length > 0;
  $("attention-card").dataset.state = stuck.items.length ? "alert" : items.length ? "warn" : "ok";
}

// --- parsers and lag ---------------------------------------------------------------------

async function loadParsers() {
  const body = await call("GET", "/api/admin/parsers");
  fillTable($("parsers"), body.items, (p) => {
    const tr = el("tr", { "data-live": String(p.live) });
    tr.append(
      el("td", { class: "name" }, p.hostname, el("span", { class: "id", text: `pid ${p.pid} · ${p.parser_id}` })),
      el("td", {}, p.live ? badge("live-parser", "live") : badge("lost-parser", "lost", "no heartbeat for three intervals")),
      el("td", { text: `${p.jobs_in_flight} of ${p.concurrency}` }),
      el("td", { text: fmtInt(p.samples_parsed) }),
      el("td", { text: p.consumer_lag === null ? "–" : fmtInt(p.consumer_lag) }),
      el("td", { text: fmtAgo(p.started_at) }),
      el("td", { text: fmtAgo(p.seen_at) }),
    );
    return tr;
  });
  $("no-parsers").hidden = body.items.length > 0;
  const live = body.items.filter((p) => p.live).length;
  const lag = Object.entries(body.consumer_lag)
    .map(([group, n]) => `${group}: ${n === null ? "–" : fmtInt(n)}`)
    .join(" · ");
  $("lag").textContent = `${live} live · consumer lag ${lag}`;
}

// --- trends --------------------------------------------------------------------------------

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

// A small chart: `series` is a list of { values, kind: "line" | "line second" | "bar-ok" | "bar-bad" }.
function chart(points, series, label) {
  const width = 560, height = 180, pad = { left: 52, right: 8, top: 10, bottom: 22 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": label });
  const n = Math.max(points.length, 1);
  const stacked = points.map((_, i) => series.filter((s) => s.kind.startsWith("bar")).reduce((a, s) => a + (s.values[i] || 0), 0));
  const lines = series.filter((s) => s.kind.startsWith("line")).flatMap((s) => s.values.filter((v) => v !== null));
  const top = Math.max(1e-9, ...stacked, ...lines) * 1.1;
  const x = (i) => pad.left + ((width - pad.left - pad.right) * i) / n;
  const y = (v) => height - pad.bottom - ((height - pad.top - pad.bottom) * v) / top;
  for (const f of [0, 0.5, 1]) {
    const v = top * f / 1.1;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    const t = svg("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    t.textContent = v >= 1000 ? `${(v / 1000).toFixed(v >= 10000 ? 0 : 1)}k` : v >= 10 ? Math.round(v) : v.toFixed(1);
    root.append(t);
  }
  for (const [i, p] of points.entries()) {
    if (i % Math.ceil(n / 6) !== 0) continue;
    const t = svg("text", { x: x(i), y: height - 6, class: "axis" });
    t.textContent = new Date(p.bucket_start).toLocaleDateString("en-GB", { day: "2-digit", month: "short", timeZone: "UTC" });
    root.append(t);
  }
  const barWidth = Math.max(1, (width - pad.left - pad.right) / n - 1);
  const base = points.map(() => 0);
  for (const s of series.filter((s) => s.kind.startsWith("bar"))) {
    s.values.forEach((v, i) => {
      if (!v) return;
      root.append(svg("rect", { x: x(i), y: y(base[i] + v), width: barWidth, height: y(base[i]) - y(base[i] + v), class: s.kind }));
      base[i] += v;
    });
  }
  for (const s of series.filter((s) => s.kind.startsWith("line"))) {
    // A gap (no data in a bucket) breaks the line; a lone point is drawn as a dot.
    let d = "";
    let open = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { open = false; return; }
      d += `${open ? " L" : " M"}${x(i + 0.5).toFixed(1)},${y(v).toFixed(1)}`;
      if (!open) root.append(svg("circle", { cx: x(i + 0.5), cy: y(v), r: 2.5, class: `dot ${s.kind}` }));
      open = true;
    });
    if (d) root.append(svg("path", { d: d.trim(), class: s.kind }));
  }
  return root;
}

function figure(title, legend, node) {
  const cap = el("figcaption", { text: title });
  cap.append(legend);
  return el("figure", { class: "trend" }, cap, node);
}

function legend(...items) {
  const span = el("span", { class: "legend" });
  for (const [swatch, text] of items) span.append(el("span", { class: `swatch ${swatch}` }), text);
  return span;
}

async function loadTrends() {
  const report = await call("GET", `/api/admin/trends?days=${trendDays}&bucket=${trendDays > 7 ? "day" : "hour"}`);
  const pts = report.points;
  const per = trendDays > 7 ? "day" : "hour";
  const samples = pts.reduce((a, p) => a + p.samples, 0);
  const done = pts.reduce((a, p) => a + p.files_completed, 0);
  const failed = pts.reduce((a, p) => a + p.files_failed, 0);
  const reasons = {};
  for (const p of pts) for (const [r, c] of Object.entries(p.failed_by_reason)) reasons[r] = (reasons[r] || 0) + c;
  const why = Object.entries(reasons).map(([r, c]) => `${r} ${c}`).join(", ");
  $("trend-totals").textContent =
    `Last ${trendDays} days, per ${per}: ${fmtInt(samples)} samples, ${done} files completed, ` +
    `${failed} failed${why ? ` (${why})` : ""}.`;
  $("trends").replaceChildren(
    figure(`Throughput (samples/s, per ${per})`, legend(["accent", "average"]),
      chart(pts, [{ kind: "line", values: pts.map((p) => p.samples_per_second) }], `Throughput in samples/s per ${per}, last ${trendDays} days`)),
    figure(`Files per ${per}`, legend(["ok", "completed"], ["bad", "failed"]),
      chart(pts, [
        { kind: "bar-ok", values: pts.map((p) => p.files_completed) },
        { kind: "bar-bad", values: pts.map((p) => p.files_failed) },
      ], `Files completed and failed per ${per}, last ${trendDays} days`)),
    figure("Median times (s)", legend(["accent", "parse"], ["warn", "queue wait"]),
      chart(pts, [
        { kind: "line", values: pts.map((p) => p.parse_p50_seconds) },
        { kind: "line second", values: pts.map((p) => p.queue_wait_p50_seconds) },
      ], `Median queue wait and parse time per ${per}, last ${trendDays} days`)),
  );
}

// --- failures of the last day --------------------------------------------------------------

async function loadFailures() {
  const body = await call("GET", "/api/admin/failures?hours=24");
  fillTable($("failures"), body.items, (f) => {
    const tr = el("tr", { "data-reason": f.reason });
    tr.append(
      nameCell(f.filename, f.file_id),
      el("td", { text: f.owner }),
      el("td", {}, badge(`reason ${f.reason === "format" ? "" : "failed"}`, f.reason)),
      el("td", { class: "message", text: f.error_message || "no reason recorded" }),
      el("td", { text: String(f.attempts) }),
      el("td", { text: fmtTime(f.finished_at) }),
    );
    return tr;
  });
  $("no-failures").hidden = body.items.length > 0;
  const counts = {};
  for (const f of body.items) counts[f.reason] = (counts[f.reason] || 0) + 1;
  $("failure-reasons").textContent = Object.entries(counts).map(([r, c]) => `${r}: ${c}`).join(" · ");
}

// --- every job, live -------------------------------------------------------------------------

function cell(tr, index) { return tr.children[index]; }

function render(job) {
  let entry = rows.get(job.id);
  if (!entry) {
    const tr = document.createElement("tr");
    for (let i = 0; i < 9; i++) tr.appendChild(document.createElement("td"));
    cell(tr, 0).className = "name";
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" });
    const fill = el("span", { class: "fill" });
    bar.append(fill);
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
  cell(tr, 0).replaceChildren(merged.filename, el("span", { class: "id", text: merged.id }));
  cell(tr, 1).textContent = merged.owner || "…";
  cell(tr, 2).replaceChildren(badge(merged.status, merged.status, merged.error_message || ""));
  const bar = cell(tr, 3).firstChild;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.setAttribute("aria-label", `${merged.filename}: ${percent}%`);
  bar.firstChild.style.width = `${percent}%`;
  const total = merged.sample_count ? ` / ${fmtInt(merged.sample_count)}` : "";
  cell(tr, 4).textContent = `${fmtInt(merged.samples_processed)}${total}`;
  cell(tr, 5).textContent = merged.status === "parsing" ? fmtRate(merged.samples_per_second) : "–";
  cell(tr, 6).textContent = merged.status === "parsing" ? fmtSeconds(merged.eta_seconds) : "–";
  cell(tr, 7).textContent = String(merged.attempts_used ?? merged.attempts ?? 0);
  const open = merged.status === "parsing" || merged.status === "queued";
  const health = [];
  if (open && merged.is_stuck) health.push(badge("stuck", "stuck", "matches the stuck rule"));
  else if (merged.status === "parsing" && merged.is_slowing) health.push(badge("slowing", "slowing", "early warning"));
  cell(tr, 8).replaceChildren(...health);
}

function renderCounts(counts) {
  $("counts").replaceChildren(
    ...["queued", "parsing", "completed", "failed", "cancelled"].map((status) =>
      el("span", { "data-status": status, text: `${status} ${counts[status] || 0}` })),
  );
}

async function refreshJobs() {
  const list = await call("GET", "/api/admin/jobs?limit=500");
  renderCounts(list.counts);
  // Oldest first, so prepend leaves the newest on top.
  for (const job of list.items.slice().reverse()) render(job);
}

async function refresh() {
  await Promise.all([refreshJobs(), loadAttention(), loadParsers(), loadFailures()]);
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
      // A new file or a state change: fetch owners, counts, flags and failures again (debounced).
      if (!known || type !== "progress") scheduleRefresh(known ? 2000 : 300);
    });
  }
}

// --- session ---------------------------------------------------------------------------------

function showSignIn(message) {
  if (source) source.close();
  clearInterval(pollTimer);
  $("jobs-view").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in-card").hidden = false;
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
  $("sign-in-card").hidden = true;
  $("jobs-view").hidden = false;
  $("sign-out").hidden = false;
  follow();
  loadTrends().catch(() => {});
  // Stuck and slowing flags and heartbeats change without an event; trends (a heavier
  // query over the batch log) are hourly figures, read once a minute.
  clearInterval(pollTimer);
  let ticks = 0;
  pollTimer = setInterval(() => {
    scheduleRefresh(0);
    if (++ticks % 6 === 0) loadTrends().catch(() => {});
  }, 10000);
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

$("sign-out").addEventListener("click", async () => {
  try { await call("DELETE", "/api/session"); } catch (_) { /* signed out anyway */ }
  showSignIn("Signed out.");
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

for (const button of document.querySelectorAll(".segmented .btn")) {
  button.addEventListener("click", async () => {
    trendDays = Number(button.dataset.days);
    for (const b of document.querySelectorAll(".segmented .btn")) b.setAttribute("aria-pressed", String(b === button));
    await loadTrends();
  });
}

start();
