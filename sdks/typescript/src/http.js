// HTTP plumbing shared by the client and the worker: JSON over node:http(s) with keep-alive
// sockets, errors as SundialError, humantime durations.
import http from "node:http";
import https from "node:https";

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
    let base = String(server).replace(/\/+$/, "");
    if (!/^https?:\/\//.test(base)) base = `http://${base}`;
    this.server = base;
    this.url = new URL(base);
    this.lib = this.url.protocol === "https:" ? https : http;
    // node:http rather than fetch: keep-alive sockets and about twice the request rate.
    this.agent = new this.lib.Agent({ keepAlive: true, noDelay: true });
    this.prefix = this.url.pathname.replace(/\/+$/, "");
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
    let target = this.prefix + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null) q.set(k, v instanceof Date ? v.toISOString() : String(v));
      }
      const qs = q.toString();
      if (qs) target += `?${qs}`;
    }
    const data = body === undefined ? null : Buffer.from(JSON.stringify(body));
    let answer;
    for (let attempt = 1; ; attempt++) {
      try {
        answer = await this.#send(method, target, data, Math.max(1, Math.ceil(timeout ?? this.timeout)), signal);
        break;
      } catch (e) {
        // A kept-alive socket the server closed while idle: retry once on a new one.
        if (e.reusedSocket && e.code === "ECONNRESET" && attempt === 1 && !signal?.aborted) continue;
        throw new Unavailable(`${method} ${path}: ${e.code ?? e.message}`, { cause: e });
      }
    }
    const [status, raw] = answer;
    let parsed = null;
    try {
      parsed = raw ? JSON.parse(raw) : null;
    } catch {
      parsed = null;
    }
    if (status >= 200 && status < 300) return parsed;
    const err = parsed && typeof parsed === "object" ? parsed.error : null;
    if (err && typeof err === "object") throw new SundialError(String(err.code ?? "error"), String(err.message ?? ""), status);
    throw new SundialError("http_error", `${method} ${path}: HTTP ${status}: ${raw.slice(0, 200)}`, status);
  }

  #send(method, target, data, ms, signal) {
    return new Promise((resolve, reject) => {
      const headers = data ? { ...this.headers, "content-length": data.length } : this.headers;
      const req = this.lib.request(
        { hostname: this.url.hostname, port: this.url.port || undefined, path: target, method, headers, agent: this.agent, signal },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            clearTimeout(timer);
            resolve([res.statusCode, Buffer.concat(chunks).toString("utf8")]);
          });
          res.on("error", fail);
        },
      );
      const timer = setTimeout(() => req.destroy(Object.assign(new Error(`timed out after ${ms} ms`), { code: "ETIMEDOUT" })), ms);
      function fail(e) {
        clearTimeout(timer);
        e.reusedSocket = req.reusedSocket;
        reject(e);
      }
      req.on("error", fail);
      req.end(data ?? undefined);
    });
  }
}
