// Human forms of numbers, sizes, rates, durations and times (the browser's locale).

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export const count = (n) => integer.format(n);
export const compactNumber = (n) => compact.format(n);
export const percent = (p) => `${Math.floor(p)}%`;

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit === 0 ? integer.format(value) : decimal.format(value)} ${units[unit]}`;
}

export function rate(samplesPerSecond) {
  if (samplesPerSecond == null) return "";
  return `${compact.format(samplesPerSecond)} samples/s`;
}

// "about 2 min": an ETA is an estimate, so say so and round it to what a person plans by.
export function eta(seconds) {
  if (seconds == null) return "";
  if (seconds < 5) return "a few seconds";
  if (seconds < 60) return `about ${Math.max(5, Math.round(seconds / 5) * 5)} s`;
  if (seconds < 3600) return `about ${Math.round(seconds / 60)} min`;
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.round((seconds % 3600) / 60);
  return minutes ? `about ${hours} h ${minutes} min` : `about ${hours} h`;
}

export function duration(seconds) {
  if (seconds == null) return "—";
  if (seconds < 60) return `${decimal.format(seconds)} s`;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round(seconds % 60);
  return h ? `${h} h ${m} min ${s} s` : `${m} min ${s} s`;
}

const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export function time(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const today = new Date();
  return when.toDateString() === today.toDateString() ? timeOnly.format(when) : dateTime.format(when);
}

const significant = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 4 });

export function number(value) {
  return value == null ? "—" : significant.format(value);
}
