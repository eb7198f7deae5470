// HTTP plumbing shared by the client and the worker: JSON over the global fetch (which keeps
// connections alive), errors as SundialError, humantime durations.

/**
 * An error answer from the server, `{"error": {"code", "message"}}`: `code`, `message` (the
 * server's sentence) and the HTTP `status` (null when the server could not be reached).
 */
export class SundialError extends Error {
  constructor(code, message, status = null) {
    super(message);
    this.name = "SundialError";
    this.code = code;
    this.status = status;
  }
}

/** The server could not be reached (refused, cut, timed out). */
export class Unavailable extends SundialError {
  constructor(message, options) {
    super("unavailable", message, null);
    this.name = "Unavailable";
    if (options?.cause) this.cause = options.cause;
  }
}

const UNITS = {
  ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1e3, sec: 1e3, secs: 1e3, m: 6e4, min: 6e4, mins: 6e4,
  h: 3.6e6, hr: 3.6e6, hrs: 3.6e6, d: 8.64e7, day: 8.64e7, days: 8.64e7,
};

/** Milliseconds in a humantime duration (`"250ms"`, `"1h 30m"`). */
export function parseDuration(text) {
  const parts = [...String(text).trim().toLowerCase().matchAll(/(\d+(?:\.\d+)?)\s*([a-zµ]+)/g)];
  if (parts.length === 0 || parts.some(([, , u]) => !(u in UNITS))) {
    throw new TypeError(`not a duration: ${JSON.stringify(text)}`);
  }
  return parts.reduce((sum, [, n, u]) => sum + Number(n) * UNITS[u], 0);
}

/** A duration for the wire: strings pass through, numbers are milliseconds. */
export function formatDuration(value) {
  if (typeof value === "string") return value;
  const ms = Math.round(Number(value));
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** A URL path segment (a `namespace/name` job reference keeps its `/` encoded). */
export const segment = (value) => encodeURIComponent(value);

export class Transport {
  constructor(server, { token, timeout = 30_000 } = {}) {
    this.server = String(server).replace(/\/+$/, "");
    if (!/^https?:\/\//.test(this.server)) this.server = `http://${this.server}`;
    this.headers = { "content-type": "application/json", accept: "application/json" };
    if (token) this.headers.authorization = `Bearer ${token}`;
    this.timeout = timeout;
  }

  /**
   * One request; the parsed JSON answer (null when empty). Throws SundialError for an error
   * status, Unavailable when the server cannot be reached or `timeout` ms pass; an abort of
   * `signal` also surfaces as Unavailable.
   */
  async request(method, path, body, { query, timeout, signal } = {}) {
    let url = this.server + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null) q.set(k, v instanceof Date ? v.toISOString() : String(v));
      }
      const qs = q.toString();
      if (qs) url += `?${qs}`;
    }
    const timer = AbortSignal.timeout(Math.max(1, Math.ceil(timeout ?? this.timeout)));
    let resp;
    let raw;
    try {
      resp = await fetch(url, {
        method,
        headers: this.headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: signal ? AbortSignal.any([timer, signal]) : timer,
      });
      raw = await resp.text();
    } catch (e) {
      throw new Unavailable(`${method} ${path}: ${e?.cause?.code ?? e?.name ?? e}`, { cause: e });
    }
    let parsed = null;
    try {
      parsed = raw ? JSON.parse(raw) : null;
    } catch {
      parsed = null;
    }
    if (resp.ok) return parsed;
    const err = parsed && typeof parsed === "object" ? parsed.error : null;
    if (err && typeof err === "object") throw new SundialError(String(err.code ?? "error"), String(err.message ?? ""), resp.status);
    throw new SundialError("http_error", `${method} ${path}: HTTP ${resp.status}: ${raw.slice(0, 200)}`, resp.status);
  }
}
