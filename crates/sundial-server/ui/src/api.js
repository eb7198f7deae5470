// The dashboard's only way to the server: the public /v1 API, with the bearer token the user
// gave (kept in localStorage). Errors keep the API's {"error": {"code", "message"}} fields.

const TOKEN_KEY = "sundial.token";

/** An answer that was not 2xx (status 0: no answer at all). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = () => localStorage.getItem(TOKEN_KEY) || "";
export function setToken(t) {
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
  health.emit();
}

// What the header shows: when the server last answered, and whether it asked for a token.
export const health = {
  lastOk: 0,
  lastError: null,
  needToken: false,
  subs: new Set(),
  emit() {
    for (const f of this.subs) f();
  },
};

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(`/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    health.lastError = "the server does not answer";
    health.emit();
    throw new ApiError(0, "unreachable", `the server does not answer (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.status === 401) {
    health.needToken = true;
    health.emit();
  } else if (health.lastError || !health.lastOk || health.needToken || Date.now() - health.lastOk > 1000) {
    health.lastOk = Date.now();
    health.lastError = null;
    if (res.ok) health.needToken = false;
    health.emit();
  } else {
    health.lastOk = Date.now();
  }
  if (!res.ok) {
    const err = data && data.error;
    throw new ApiError(res.status, err?.code || `http_${res.status}`, err?.message || `${res.status} ${res.statusText}`);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);
export const del = (path) => api("DELETE", path);

/** `?a=1&b=2`, leaving out empty values. */
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  const s = p.toString();
  return s ? `?${s}` : "";
}

/** A route this server does not have (yet): the panel says so instead of failing. */
export const missingRoute = (e) => e instanceof ApiError && (e.status === 404 || e.status === 405);

/** A job id, or `namespace/name`, as one path segment. */
export const jobPath = (id) => `/jobs/${encodeURIComponent(id)}`;
