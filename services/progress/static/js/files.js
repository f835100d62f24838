// The file list: one row per file, updated in place from SSE events (idempotent: a row
// keeps the record of the newest event id it has seen, so replays and duplicates are no-ops).

import * as fmt from "./format.js";

export const UNFINISHED = new Set(["uploaded", "queued", "parsing"]);
const STATUS_LABEL = {
  uploaded: "Uploaded",
  queued: "Queued",
  parsing: "Parsing",
  completed: "Completed",
  failed: "Failed",
  cancelled: "Cancelled",
};
const ACTIONS = {
  cancel: "Cancel",
  retry: "Retry",
  reparse: "Re-parse",
  csv: "Export CSV",
  parquet: "Export Parquet",
  delete: "Delete",
};
// Commands that throw work away ask for a second click instead of a modal confirm().
const CONFIRM = { delete: "Confirm delete", reparse: "Confirm re-parse" };

export const statusLabel = (status) => STATUS_LABEL[status] || status;

// No progress data yet: the bar is indeterminate rather than a misleading 0 %.
export function waiting(record) {
  return (
    record.status === "uploaded" ||
    record.status === "queued" ||
    (record.status === "parsing" && !record.samples_processed)
  );
}

export function samplesText(record) {
  const done = fmt.count(record.samples_processed);
  if (record.sample_count == null) return `${done} samples`;
  const approx = record.sample_count_exact ? "" : "~";
  return `${done} / ${approx}${fmt.count(record.sample_count)} samples`;
}

export function actionsFor(status) {
  if (UNFINISHED.has(status)) return ["cancel", "delete"];
  if (status === "completed") return ["csv", "parquet", "reparse", "delete"];
  return ["retry", "reparse", "delete"];
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function progressBar(label) {
  const bar = el("div", "bar");
  bar.setAttribute("role", "progressbar");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", "0");
  bar.setAttribute("aria-label", label);
  bar.append(el("div", "fill"));
  return bar;
}

export function setBar(bar, percent, indeterminate) {
  const value = Math.max(0, Math.min(100, Math.floor(percent)));
  bar.setAttribute("aria-valuenow", String(value));
  bar.classList.toggle("indeterminate", indeterminate);
  if (indeterminate) bar.setAttribute("aria-valuetext", "waiting for the first batch");
  else bar.removeAttribute("aria-valuetext");
  // The fill is the number shown (floored), never ahead of it or behind it.
  bar.firstElementChild.style.transform = `scaleX(${indeterminate ? 0 : value / 100})`;
}

export class FileList {
  constructor(listEl, { onOpen, onAction, onStatusChange }) {
    this.list = listEl;
    this.rows = new Map();
    this.onOpen = onOpen;
    this.onAction = onAction;
    this.onStatusChange = onStatusChange;
    // The server's ETA is as of the last batch; between batches it is counted down here,
    // from when the record arrived (the browser's own clock: no skew with the server's).
    this.ticker = setInterval(() => this.tick(), 1000);
  }

  tick() {
    for (const row of this.rows.values()) {
      if (row.record?.status === "parsing") this.renderEta(row);
    }
  }

  get size() {
    return this.rows.size;
  }

  record(id) {
    return this.rows.get(id)?.record;
  }

  // eventId null = a record from a plain API answer: it only fills in files no event has
  // described yet, since it may be older than the stream's newest state.
  apply(record, eventId = null) {
    let row = this.rows.get(record.id);
    if (row) {
      if (eventId === null ? row.eventId !== null : row.eventId !== null && eventId < row.eventId) {
        return false;
      }
    } else {
      row = this.create(record);
    }
    const previous = row.record?.status;
    row.record = record;
    row.receivedAt = performance.now();
    if (eventId !== null) row.eventId = eventId;
    this.render(row);
    if (!previous) {
      // A ZIP that arrives after its streams: they can name it now.
      for (const child of this.streamsOf(record.id)) {
        const childRow = this.rows.get(child.dataset.id);
        if (childRow?.record) this.render(childRow);
      }
    }
    if (previous && previous !== record.status) this.onStatusChange(record, previous);
    return true;
  }

  remove(id) {
    const row = this.rows.get(id);
    if (!row) return;
    row.el.remove();
    this.rows.delete(id);
  }

  clear() {
    this.rows.clear();
    this.list.replaceChildren();
  }

  message(id, text, isError = false) {
    const row = this.rows.get(id);
    if (!row) return;
    row.parts.message.textContent = text;
    row.parts.message.classList.toggle("error", isError);
    row.parts.message.hidden = !text;
  }

  create(record) {
    const li = el("li", "file");
    li.dataset.id = record.id;
    if (record.parent_id) {
      // A sensor stream extracted from a ZIP upload: shown indented under its ZIP.
      li.classList.add("child");
      li.dataset.parent = record.parent_id;
    }
    const head = el("div", "file-head");
    const name = el("button", "file-name", record.filename);
    name.type = "button";
    name.title = `Details of ${record.filename}`;
    name.addEventListener("click", () => this.onOpen(record.id));
    const badge = el("span", "badge");
    head.append(name, badge);
    const meta = el("div", "file-meta muted small");
    const bar = progressBar(`Progress of ${record.filename}`);
    const stats = el("div", "file-stats");
    const pct = el("span", "pct");
    const samples = el("span", "samples");
    const speed = el("span", "rate muted");
    const eta = el("span", "eta muted");
    stats.append(pct, samples, speed, eta);
    const times = el("div", "file-times muted small");
    const error = el("p", "file-error");
    error.setAttribute("role", "alert");
    const notes = el("p", "file-notes muted small");
    const actions = el("div", "actions");
    const message = el("p", "action-message small");
    message.setAttribute("role", "status");
    message.hidden = true;
    li.append(head, meta, bar, stats, times, error, notes, actions, message);
    // A click anywhere on the row (not on a control) opens the details too.
    li.addEventListener("click", (e) => {
      if (!e.target.closest("button, a")) this.onOpen(record.id);
    });
    const row = {
      record: null,
      eventId: null,
      el: li,
      actionsFor: null,
      parts: { name, badge, meta, bar, pct, samples, speed, eta, times, error, notes, actions, message },
    };
    this.rows.set(record.id, row);
    this.place(li, record);
    return row;
  }

  // Newest first, like GET /api/files, and a ZIP's sensor streams right under their ZIP
  // (whichever of the two arrives first).
  place(li, record) {
    const parent = record.parent_id && this.rows.get(record.parent_id);
    if (parent) {
      this.lastOfFamily(parent.el).after(li);
      return;
    }
    let placed = false;
    for (const other of this.list.children) {
      if (other.dataset.parent) continue; // streams move with their ZIP
      const otherRecord = this.rows.get(other.dataset.id)?.record;
      if (otherRecord && otherRecord.created_at < record.created_at) {
        this.list.insertBefore(li, other);
        placed = true;
        break;
      }
    }
    if (!placed) this.list.append(li);
    let anchor = li;
    for (const child of this.streamsOf(record.id)) {
      anchor.after(child);
      anchor = child;
    }
  }

  // The rows of a ZIP's sensor streams, in page order.
  streamsOf(id) {
    return this.list.querySelectorAll(`li.file[data-parent="${id}"]`);
  }

  lastOfFamily(parentEl) {
    let last = parentEl;
    while (last.nextElementSibling?.dataset.parent === parentEl.dataset.id) last = last.nextElementSibling;
    return last;
  }

  render(row) {
    const r = row.record;
    const p = row.parts;
    row.el.dataset.status = r.status;
    p.badge.textContent = statusLabel(r.status);
    p.badge.className = `badge ${r.status}`;
    const meta = [fmt.bytes(r.size_bytes), r.format || (UNFINISHED.has(r.status) ? "detecting format…" : "format not detected")];
    if (r.children?.length) meta.push(`${r.children.length} sensor streams`);
    if (r.parent_id) meta.push(`sensor stream of ${this.record(r.parent_id)?.filename || "a ZIP upload"}`);
    if (r.duplicate_of) meta.push("duplicate upload");
    p.meta.textContent = meta.join(" · ");
    const indeterminate = waiting(r);
    setBar(p.bar, r.percent, indeterminate);
    p.pct.textContent = indeterminate ? statusLabel(r.status) + "…" : fmt.percent(r.percent);
    p.samples.textContent = samplesText(r);
    const live = r.status === "parsing";
    p.speed.textContent = live ? fmt.rate(r.samples_per_second) : "";
    this.renderEta(row);
    this.renderTimes(p.times, r);
    p.error.textContent = r.status === "failed" ? r.error_message || "failed (no reason given)" : "";
    p.error.hidden = r.status !== "failed";
    const notes = [];
    if (r.rows_skipped) notes.push(`${fmt.count(r.rows_skipped)} rows skipped`);
    for (const w of r.warnings || []) notes.push(w);
    p.notes.textContent = notes.join(" · ");
    p.notes.hidden = notes.length === 0;
    const wanted = actionsFor(r.status).join(",");
    if (row.actionsFor !== wanted) {
      row.actionsFor = wanted;
      this.renderActions(row);
    }
  }

  renderEta(row) {
    const r = row.record;
    const p = row.parts;
    if (r.status !== "parsing" || r.eta_seconds == null) {
      p.eta.textContent = "";
      p.eta.removeAttribute("title");
      return;
    }
    const waited = (performance.now() - (row.receivedAt ?? performance.now())) / 1000;
    const left = r.eta_seconds - waited;
    // Past the estimate with no new batch: say so rather than showing "0 s left".
    p.eta.textContent = left > 0 ? `${fmt.eta(left)} left` : "waiting for the next batch…";
    if (r.eta_low_seconds != null && r.eta_high_seconds != null) {
      const low = Math.max(r.eta_low_seconds - waited, 0);
      const high = Math.max(r.eta_high_seconds - waited, 0);
      p.eta.title = `between ${fmt.eta(low)} and ${fmt.eta(high)}`;
    } else {
      p.eta.removeAttribute("title");
    }
  }

  renderTimes(node, r) {
    node.replaceChildren();
    const add = (label, iso) => {
      if (!iso) return;
      const span = el("span", "", `${label} `);
      const t = el("time", "", fmt.time(iso));
      t.dateTime = iso;
      span.append(t);
      node.append(span);
    };
    add("Uploaded", r.created_at);
    add("Started", r.processing_started_at);
    add(r.status === "completed" ? "Finished" : "Ended", UNFINISHED.has(r.status) ? null : r.completed_at);
  }

  renderActions(row) {
    const hadFocus = row.parts.actions.contains(document.activeElement);
    row.parts.actions.replaceChildren();
    for (const action of row.actionsFor.split(",")) {
      const button = el("button", `btn small ${action === "delete" ? "danger" : "secondary"}`, ACTIONS[action]);
      button.type = "button";
      button.dataset.action = action;
      button.setAttribute("aria-label", `${ACTIONS[action]}: ${row.record.filename}`);
      button.addEventListener("click", () => this.clickAction(row, button, action));
      row.parts.actions.append(button);
    }
    if (hadFocus) row.parts.name.focus();
  }

  clickAction(row, button, action) {
    if (CONFIRM[action] && button.dataset.armed !== "1") {
      button.dataset.armed = "1";
      button.textContent = CONFIRM[action];
      setTimeout(() => {
        button.dataset.armed = "";
        button.textContent = ACTIONS[action];
      }, 4000);
      return;
    }
    this.onAction(row.record.id, action);
  }
}
