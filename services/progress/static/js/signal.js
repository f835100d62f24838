// The signal preview of one file: a panel per sensor (accelerometer, gyroscope,
// magnetometer), each axis drawn as its per-bucket min-max band, so a one-sample spike
// shows. Time runs along x (or the sample index where the file has no time). Drag across
// a panel to zoom into that span; "Whole recording" goes back.

import * as fmt from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const PANELS = [
  { key: "a", name: "Accelerometer" },
  { key: "g", name: "Gyroscope" },
  { key: "m", name: "Magnetometer" },
];
// The stored units (SPEC §5): canonical, unless the file's warnings name a unit that could
// not be converted and was stored as given (Xsens' normalised magnetometer, "a.u.").
const CANONICAL = { a: "m/s²", g: "rad/s", m: "µT" };
const AS_GIVEN = /\b(accelerometer|gyroscope|magnetometer) unit (['"])(.+?)\2 cannot be converted/;

export function storedUnits(record) {
  const units = { ...CANONICAL };
  for (const warning of record?.warnings || []) {
    const match = AS_GIVEN.exec(warning);
    if (match) units[{ accelerometer: "a", gyroscope: "g", magnetometer: "m" }[match[1]]] = match[3];
  }
  return units;
}
const COLOURS = { x: "var(--axis-x)", y: "var(--axis-y)", z: "var(--axis-z)" };
const WIDTH = 640;
const HEIGHT = 150;
const PAD = { left: 56, right: 12, top: 22, bottom: 24 };
// Value ticks fit the 56 px left of a panel: 3 significant digits ("-0.0209", not the
// clipped "-0.02094"), compact from 10,000 ("12.3K"), scientific below 0.001.
const TICK = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });
const TICK_BIG = new Intl.NumberFormat(undefined, { notation: "compact", maximumSignificantDigits: 3 });
const TICK_SMALL = new Intl.NumberFormat(undefined, { notation: "scientific", maximumSignificantDigits: 2 });

export function tick(value) {
  const size = Math.abs(value);
  if (size >= 1e4) return TICK_BIG.format(value);
  return size !== 0 && size < 1e-3 ? TICK_SMALL.format(value) : TICK.format(value);
}
// t_ns before 2000 is time since the recording's start (the file gave no absolute time).
const EPOCH_FROM_NS = 946_684_800e9;

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function text(tag, className, value) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  node.textContent = value;
  return node;
}

// The x value (ns or sample index) at the middle of bucket i.
function bucketX(preview, i) {
  const lo = preview.t_start_ns ?? 0;
  const hi = preview.t_end_ns ?? preview.points - 1;
  return lo + ((i + 0.5) * (hi - lo + 1)) / preview.points;
}

function xLabel(preview, value) {
  if (preview.t_start_ns == null) return `#${fmt.compactNumber(value)}`;
  return fmt.duration((value - preview.t_start_ns) / 1e9);
}

// One axis as a band: the max line left to right, the min line back; a run of empty
// buckets (a gap) breaks the band.
function band(values, x, y) {
  const paths = [];
  let top = [];
  let bottom = [];
  const flush = () => {
    if (top.length) {
      const pts = [...top, ...bottom.reverse()];
      paths.push(`M${pts.map(([px, py]) => `${px.toFixed(1)},${py.toFixed(1)}`).join("L")}Z`);
    }
    top = [];
    bottom = [];
  };
  values.max.forEach((hi, i) => {
    const lo = values.min[i];
    if (hi == null || lo == null) return flush();
    top.push([x(i), y(hi)]);
    bottom.push([x(i), y(lo)]);
  });
  flush();
  return paths.join("");
}

function panel(preview, spec, unit, axes, onZoom) {
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  let min = Infinity;
  let max = -Infinity;
  for (const name of axes) {
    for (const v of preview.axes[name].min) if (v != null) min = Math.min(min, v);
    for (const v of preview.axes[name].max) if (v != null) max = Math.max(max, v);
  }
  if (!Number.isFinite(min)) [min, max] = [0, 1];
  if (min === max) [min, max] = [min - 1, max + 1];
  const x = (i) => PAD.left + ((i + 0.5) / preview.points) * plotW;
  const y = (v) => PAD.top + plotH * (1 - (v - min) / (max - min));
  const root = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "signal-panel", "data-sensor": spec.key });
  for (const value of [min, (min + max) / 2, max]) {
    const py = y(value);
    root.append(svg("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: py, y2: py, class: "grid" }));
    const label = svg("text", { x: PAD.left - 6, y: py + 4, "text-anchor": "end", class: "axis" });
    label.textContent = tick(value);
    root.append(label);
  }
  for (const name of axes) {
    const d = band(preview.axes[name], x, y);
    if (d) root.append(svg("path", { d, class: `trace axis-${name[1]}`, fill: COLOURS[name[1]], stroke: COLOURS[name[1]] }));
  }
  const lo = preview.t_start_ns ?? 0;
  const hi = preview.t_end_ns ?? preview.points - 1;
  for (const fraction of [0, 0.5, 1]) {
    const anchor = fraction === 0 ? "start" : fraction === 1 ? "end" : "middle";
    const label = svg("text", { x: PAD.left + fraction * plotW, y: HEIGHT - 6, "text-anchor": anchor, class: "axis" });
    label.textContent = xLabel(preview, lo + fraction * (hi - lo));
    root.append(label);
  }
  const title = svg("text", { x: PAD.left, y: 14, class: "axis panel-title" });
  title.textContent = `${spec.name} (${unit}): ${axes.join(", ")}`;
  root.append(title);
  const selection = svg("rect", { y: PAD.top, height: plotH, class: "zoom-selection", visibility: "hidden" });
  root.append(selection);
  // Drag to zoom: the chosen span of buckets becomes the next request's range.
  const toBucket = (event) => {
    const box = root.getBoundingClientRect();
    const vx = ((event.clientX - box.left) / box.width) * WIDTH;
    return Math.max(0, Math.min(preview.points - 1, ((vx - PAD.left) / plotW) * preview.points - 0.5));
  };
  let start = null;
  root.addEventListener("pointerdown", (event) => {
    start = toBucket(event);
    root.setPointerCapture?.(event.pointerId);
  });
  root.addEventListener("pointermove", (event) => {
    if (start == null) return;
    const [a, b] = [start, toBucket(event)].sort((p, q) => p - q);
    selection.setAttribute("x", x(a));
    selection.setAttribute("width", Math.max(1, x(b) - x(a)));
    selection.setAttribute("visibility", "visible");
  });
  root.addEventListener("pointerup", (event) => {
    if (start == null) return;
    const [a, b] = [start, toBucket(event)].sort((p, q) => p - q);
    start = null;
    selection.setAttribute("visibility", "hidden");
    if (b - a < 1) return;
    const half = (bucketX(preview, 1) - bucketX(preview, 0)) / 2;
    onZoom(Math.floor(bucketX(preview, a) - half), Math.ceil(bucketX(preview, b) + half));
  });
  return root;
}

function describe(preview, groups, summary, units, sensor) {
  const parts = groups.map(({ spec, axes }) => `${spec.name.toLowerCase()} ${axes.join(", ")} in ${units[spec.key]}`);
  const span = preview.t_start_ns == null
    ? `${fmt.count(preview.points)} points by sample index`
    : `${fmt.duration((preview.t_end_ns - preview.t_start_ns) / 1e9)} in ${fmt.count(preview.points)} points`;
  const gaps = summary?.gaps ? `; ${fmt.count(summary.gaps)} gaps` : "";
  const of = sensor ? ` of ${sensor}` : "";
  return `Signal preview${of}: ${parts.join("; ")}; ${span}${gaps}`;
}

// The figure for one preview answer, or a short note when nothing is stored yet;
// `sensor` names the one drawn when the file has several.
export function signalFigure(preview, summary, onZoom, units = CANONICAL, sensor = null) {
  const figure = document.createElement("figure");
  figure.className = "signal";
  figure.setAttribute("role", "img");
  const groups = PANELS.map((spec) => ({
    spec,
    axes: Object.keys(preview.axes).filter((name) => name[0] === spec.key),
  })).filter((g) => g.axes.length);
  if (!preview.points || !groups.length) {
    figure.setAttribute("aria-label", "Signal preview: no samples stored yet");
    figure.append(text("p", "muted", "No samples stored yet."));
    return figure;
  }
  figure.setAttribute("aria-label", describe(preview, groups, summary, units, sensor));
  figure.dataset.points = String(preview.points);
  for (const { spec, axes } of groups) figure.append(panel(preview, spec, units[spec.key], axes, onZoom));
  const legend = text("figcaption", "muted small", "");
  legend.append(
    ...["x", "y", "z"].map((a) => {
      const key = text("span", `key axis-${a}`, a);
      return key;
    }),
    document.createTextNode(
      preview.t_start_ns == null
        ? " · no time in the file: x is the sample index · drag to zoom"
        : preview.t_start_ns < EPOCH_FROM_NS
          ? " · time since the start of the recording · drag to zoom"
          : ` · from ${new Date(preview.t_start_ns / 1e6).toISOString().replace("T", " ").slice(0, 23)} UTC · drag to zoom`,
    ),
  );
  figure.append(legend);
  return figure;
}

// Seconds, as milliseconds below one second (a 30 ms gap is not "0 s").
export function shortDuration(seconds) {
  return seconds < 1 ? `${fmt.number(seconds * 1000)} ms` : fmt.duration(seconds);
}

// The note under the figure where the recording has gaps.
export function gapNote(summary) {
  if (!summary || !summary.gaps) return null;
  return text(
    "p",
    "gap-note",
    `This recording has ${fmt.count(summary.gaps)} gap${summary.gaps === 1 ? "" : "s"} longer than 5 sample periods` +
      (summary.longest_gap_seconds != null ? ` (longest ${shortDuration(summary.longest_gap_seconds)})` : "") +
      "; where a gap is wider than a plotted point the plot leaves it empty.",
  );
}
