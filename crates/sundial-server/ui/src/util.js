// Formatting shared by the views: relative and absolute times, durations, short ids.

const units = [
  [86400, "d"],
  [3600, "h"],
  [60, "m"],
  [1, "s"],
];

/** "3s ago", "in 5m", "now". */
export function rel(t, now = Date.now()) {
  if (!t) return "—";
  const secs = (new Date(t).getTime() - now) / 1000;
  const a = Math.abs(secs);
  if (a < 1) return "now";
  let text = "";
  for (const [size, unit] of units) {
    if (a >= size) {
      const n = a / size;
      text = `${n < 10 && size > 1 ? Math.floor(n * 10) / 10 : Math.floor(n)}${unit}`;
      break;
    }
  }
  return secs < 0 ? `${text} ago` : `in ${text}`;
}

const fmtCache = new Map();
function formatter(zone) {
  const key = zone || "";
  if (!fmtCache.has(key)) {
    let f;
    try {
      f = new Intl.DateTimeFormat(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
        timeZone: zone || undefined, timeZoneName: "short",
      });
    } catch {
      f = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "long" });
    }
    fmtCache.set(key, f);
  }
  return fmtCache.get(key);
}

/** An absolute time in `zone` (the browser's when absent). */
export const abs = (t, zone) => (t ? formatter(zone).format(new Date(t)) : "—");

/** What a time's tooltip says: the trigger's zone (when given), the browser's, and UTC. */
export function timeTitle(t, zone) {
  if (!t) return "";
  const lines = [];
  if (zone && zone !== "UTC") lines.push(`${abs(t, zone)} (${zone})`);
  lines.push(`${abs(t)} (this browser)`);
  lines.push(`${new Date(t).toISOString()} (UTC)`);
  return lines.join("\n");
}

/** "850ms", "12.3s", "4m 10s", "2h 5m". */
export function dur(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(2) : s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
  return `${Math.floor(m / 60)}h ${m % 60}m`;
}

export const between = (a, b) => (a && b ? new Date(b).getTime() - new Date(a).getTime() : null);

/** The tail of a UUIDv7: its head is the timestamp, which neighbours share. */
export const shortId = (id) => (id ? id.slice(-8) : "—");

export const FAILED_STATES = ["failed", "timed_out"];
export const RETRYABLE = ["failed", "timed_out", "cancelled"];
export const CANCELLABLE = ["pending", "running"];
export const RUN_STATES = ["pending", "running", "succeeded", "failed", "timed_out", "cancelled", "skipped"];

/** A `datetime-local` input's value (browser time) ↔ RFC 3339 UTC. */
export function localInputToIso(v) {
  if (!v) return "";
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}
export function isoToLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** One line describing a trigger's schedule. */
export function triggerText(t) {
  switch (t.kind) {
    case "cron":
      return `cron ${t.expr}`;
    case "interval":
      return `every ${t.every}`;
    case "once":
      return `once at ${t.at}`;
    default:
      return t.kind;
  }
}
