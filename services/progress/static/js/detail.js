// The detail view of one file: its record, the signal preview with the summary beside it
// (both refreshed as batches land), a chart of samples/s per batch (inline SVG, growing
// live while it parses) and, once complete, the value ranges of its stored samples.

import * as api from "./api.js";
import * as fmt from "./format.js";
import { samplesText, statusLabel, UNFINISHED } from "./files.js";
import { gapNote, shortDuration, signalFigure, storedUnits } from "./signal.js";

const SVG = "http://www.w3.org/2000/svg";
const REFETCH_MS = 1000; // at most one batch-log fetch a second per open file
const SIGNAL_MS = 1500; // and one preview fetch every 1.5 s
// The summary of a file still parsing is computed afresh on every request (a long file's
// reads its whole pyramid), so while parsing it is refetched at most every 10 s.
const SUMMARY_WHILE_PARSING_MS = 10000;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

// Samples per second of each batch of the latest run (a re-parse starts a new run).
export function batchRates(items) {
  const run = items.reduce((m, b) => Math.max(m, b.run), 0);
  return items
    .filter((b) => b.run === run)
    .map((b) => ({
      batch: b.batch_number,
      samples: b.samples_in_batch,
      rate: b.batch_processing_time_ms > 0 ? (b.samples_in_batch * 1000) / b.batch_processing_time_ms : 0,
    }));
}

export function chart(points) {
  const width = 640;
  const height = 220;
  const pad = { left: 56, right: 12, top: 14, bottom: 30 };
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  const max = Math.max(1, ...points.map((p) => p.rate));
  const mean = points.length ? points.reduce((s, p) => s + p.rate, 0) / points.length : 0;
  root.setAttribute(
    "aria-label",
    points.length
      ? `Samples per second over ${points.length} batches; peak ${fmt.rate(max)}, mean ${fmt.rate(mean)}`
      : "No batches yet",
  );
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = pad.top + plotH * (1 - fraction);
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
    const label = svg("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end", class: "axis" });
    label.textContent = fmt.compactNumber(max * fraction);
    root.append(label);
  }
  const step = plotW / Math.max(points.length, 1);
  const gap = step > 6 ? 2 : 0;
  points.forEach((p, i) => {
    const h = (p.rate / max) * plotH;
    const rect = svg("rect", {
      x: pad.left + i * step + gap / 2,
      y: pad.top + plotH - h,
      width: Math.max(step - gap, 0.5),
      height: h,
      class: "bar-rect",
    });
    const title = svg("title", {});
    title.textContent = `batch ${p.batch}: ${fmt.count(p.samples)} samples at ${fmt.rate(p.rate)}`;
    rect.append(title);
    root.append(rect);
  });
  const xLabel = svg("text", { x: pad.left + plotW / 2, y: height - 8, "text-anchor": "middle", class: "axis" });
  xLabel.textContent = points.length ? `batches 1–${points.length}` : "waiting for the first batch";
  root.append(xLabel);
  const yLabel = svg("text", { x: 2, y: height - 8, "text-anchor": "start", class: "axis" });
  yLabel.textContent = "samples/s";
  root.append(yLabel);
  return root;
}

function facts(record) {
  const dl = el("dl", "facts");
  const add = (term, value) => {
    if (value === "" || value == null) return;
    dl.append(el("dt", "", term), el("dd", "", value));
  };
  add("Status", statusLabel(record.status));
  add("Format", record.format || "not detected yet");
  add("Size", fmt.bytes(record.size_bytes));
  add("Samples", samplesText(record));
  add("Progress", fmt.percent(record.percent));
  if (record.status === "parsing") {
    add("Rate", fmt.rate(record.samples_per_second));
    add("Time left", record.eta_seconds != null ? fmt.eta(record.eta_seconds) : "estimating…");
  }
  add("Batches", record.batch_number ? fmt.count(record.batch_number) : "");
  add("Uploaded", fmt.time(record.created_at));
  add("Started", fmt.time(record.processing_started_at));
  add("Finished", UNFINISHED.has(record.status) ? "" : fmt.time(record.completed_at));
  add("Rows skipped", record.rows_skipped ? fmt.count(record.rows_skipped) : "");
  add("Warnings", (record.warnings || []).join("; "));
  add("Failure", record.status === "failed" ? record.error_message : "");
  add("SHA-256", record.sha256);
  return dl;
}

// The summary in words, beside the signal.
export function summaryFacts(s) {
  const dl = el("dl", "facts signal-facts");
  const add = (term, value) => dl.append(el("dt", "", term), el("dd", "", value));
  add("Stored samples", fmt.count(s.samples));
  add("Duration", fmt.duration(s.duration_seconds));
  add("Sample rate", s.sample_rate_hz == null ? "—" : `${fmt.number(s.sample_rate_hz)} Hz`);
  add("Gaps", s.gaps == null ? "—" : fmt.count(s.gaps));
  // `longest_gap_seconds` is the longest interval between samples, a gap or not.
  add("Longest interval", s.longest_gap_seconds == null ? "—" : shortDuration(s.longest_gap_seconds));
  const clipped = s.sensors.flatMap((sensor) =>
    Object.entries(sensor.ranges).filter(([, r]) => r.clipped).map(([axis, r]) => `${axis} ${fmt.count(r.clipped)}`),
  );
  if (clipped.length) add("Clipped", clipped.join(", "));
  return dl;
}

export function summaryTable(s, units = storedUnits(null)) {
  const wrap = el("div", "summary");
  const overall = el("dl", "facts");
  const add = (term, value) => overall.append(el("dt", "", term), el("dd", "", value));
  add("Stored samples", fmt.count(s.samples));
  add("Duration", fmt.duration(s.duration_seconds));
  add("Sample rate", s.sample_rate_hz == null ? "—" : `${fmt.number(s.sample_rate_hz)} Hz`);
  wrap.append(overall);
  for (const sensor of s.sensors) {
    const axes = Object.entries(sensor.ranges);
    if (!axes.length) continue;
    const table = el("table", "ranges");
    const caption = sensor.sensor ? `${sensor.sensor}: ` : "";
    table.append(el("caption", "", `${caption}value ranges (${fmt.count(sensor.samples)} samples)`));
    const head = el("tr");
    for (const h of ["Axis", "Min", "Max", "Mean", "Unit"]) head.append(el("th", "", h));
    const thead = el("thead");
    thead.append(head);
    const tbody = el("tbody");
    for (const [axis, range] of axes) {
      const tr = el("tr");
      const th = el("th", "", axis);
      th.scope = "row";
      const mean = range.mean == null ? "—" : fmt.number(range.mean);
      tr.append(th, el("td", "", fmt.number(range.min)), el("td", "", fmt.number(range.max)), el("td", "", mean), el("td", "muted", units[axis[0]] || ""));
      tbody.append(tr);
    }
    table.append(thead, tbody);
    const scroller = el("div", "table-scroll");
    scroller.append(table);
    wrap.append(scroller);
  }
  return wrap;
}

export class DetailView {
  constructor(dialog, body, title) {
    this.dialog = dialog;
    this.body = body;
    this.title = title;
    this.id = null;
    this.timer = null;
    this.lastFetch = 0;
    this.summaryShown = false;
    this.zoom = null;
    this.status = null;
    this.lastSummary = null;
    this.summaryAt = 0;
    this.signalTimer = null;
    this.lastSignal = 0;
    dialog.addEventListener("close", () => this.closed());
  }

  open(record, opener) {
    this.id = record.id;
    this.opener = opener;
    this.summaryShown = false;
    this.zoom = null;
    this.sensor = null;
    this.lastSummary = null;
    this.summaryAt = 0;
    this.status = record.status;
    this.record = record;
    this.title.textContent = record.filename;
    this.body.replaceChildren(
      el("div", "facts-slot"),
      el("h3", "", "Signal"),
      el("div", "signal-slot"),
      el("h3", "", "Processing speed per batch"),
      el("div", "chart-slot"),
      el("div", "summary-slot"),
    );
    this.update(record);
    if (!this.dialog.open) this.dialog.showModal();
    this.fetchBatches();
    this.fetchSignal();
  }

  // A new state of the open file: redraw the facts, refetch the batch log (throttled).
  update(record) {
    if (record.id !== this.id) return;
    this.status = record.status;
    this.record = record;
    this.body.querySelector(".facts-slot").replaceChildren(facts(record));
    if (record.status === "parsing") {
      this.scheduleBatches();
      this.scheduleSignal();
    }
    if (!UNFINISHED.has(record.status)) {
      this.scheduleBatches();
      if (record.status === "completed" && !this.summaryShown) {
        this.fetchSummary();
        this.scheduleSignal();
      }
    }
  }

  scheduleBatches() {
    if (this.timer) return;
    const wait = Math.max(0, this.lastFetch + REFETCH_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.fetchBatches();
    }, wait);
  }

  async fetchBatches() {
    const id = this.id;
    this.lastFetch = Date.now();
    try {
      const log = await api.batches(id);
      if (id !== this.id) return;
      this.body.querySelector(".chart-slot").replaceChildren(chart(batchRates(log.items)));
    } catch (err) {
      if (id === this.id) this.body.querySelector(".chart-slot").replaceChildren(el("p", "error", err.message));
    }
  }

  scheduleSignal() {
    if (this.signalTimer) return;
    const wait = Math.max(0, this.lastSignal + SIGNAL_MS - Date.now());
    this.signalTimer = setTimeout(() => {
      this.signalTimer = null;
      this.fetchSignal();
    }, wait);
  }

  // The preview (of the chosen sensor and zoomed span, if any) and the summary, side by side.
  async fetchSignal() {
    const id = this.id;
    const zoom = this.zoom;
    const sensor = this.sensor;
    this.lastSignal = Date.now();
    const slot = this.body.querySelector(".signal-slot");
    try {
      const fresh = this.status !== "parsing" || Date.now() - this.summaryAt >= SUMMARY_WHILE_PARSING_MS;
      const [preview, summary] = await Promise.all([
        api.preview(id, zoom, sensor),
        fresh || !this.lastSummary ? api.summary(id) : Promise.resolve(this.lastSummary),
      ]);
      if (summary !== this.lastSummary) [this.lastSummary, this.summaryAt] = [summary, Date.now()];
      if (id !== this.id || zoom !== this.zoom || sensor !== this.sensor) return;
      const names = summary.sensors.map((x) => x.sensor).filter(Boolean);
      const row = el("div", "signal-row");
      const figure = signalFigure(
        preview,
        summary,
        (lo, hi) => {
          this.zoom = [lo, hi];
          this.fetchSignal();
        },
        storedUnits(this.record),
        names.length > 1 ? sensor || names[0] : null,
      );
      const side = el("div", "signal-side");
      if (names.length > 1) side.append(this.sensorPicker(names, sensor || names[0]));
      side.append(summaryFacts(summary));
      if (zoom) {
        const reset = el("button", "btn ghost", "Whole recording");
        reset.type = "button";
        reset.addEventListener("click", () => {
          this.zoom = null;
          this.fetchSignal();
        });
        side.append(reset);
      }
      row.append(figure, side);
      const note = gapNote(summary);
      const picking = slot.contains(document.activeElement) && document.activeElement.matches("select");
      slot.replaceChildren(...(note ? [row, note] : [row]));
      if (picking) slot.querySelector("select")?.focus(); // a redraw keeps the keyboard there
    } catch (err) {
      if (id === this.id) slot.replaceChildren(el("p", "error", err.message));
    }
  }

  // A file of several sensors (APDM, Noraxon): which one the figure draws.
  sensorPicker(names, current) {
    const label = el("label", "sensor-pick", "Sensor ");
    const select = document.createElement("select");
    for (const name of names) select.append(new Option(name, name, false, name === current));
    select.addEventListener("change", () => {
      this.sensor = select.value;
      this.zoom = null;
      this.fetchSignal();
    });
    label.append(select);
    return label;
  }

  async fetchSummary() {
    const id = this.id;
    this.summaryShown = true;
    const slot = this.body.querySelector(".summary-slot");
    slot.replaceChildren(el("h3", "", "Summary"), el("p", "muted", "Computing…"));
    try {
      const s = await api.summary(id);
      if (id === this.id) slot.replaceChildren(el("h3", "", "Summary"), summaryTable(s, storedUnits(this.record)));
    } catch (err) {
      if (id === this.id) slot.replaceChildren(el("h3", "", "Summary"), el("p", "error", err.message));
    }
  }

  forget(id) {
    if (id === this.id && this.dialog.open) this.dialog.close();
  }

  closed() {
    clearTimeout(this.timer);
    clearTimeout(this.signalTimer);
    this.timer = null;
    this.signalTimer = null;
    this.id = null;
    this.opener?.focus();
  }
}
