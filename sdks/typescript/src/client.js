// The API client: submit jobs, read and wait for runs, operate jobs and runs.
import { SundialError, Transport, formatDuration, segment } from "./http.js";

/** States a run does not leave by itself. */
export const FINISHED_STATES = Object.freeze(["succeeded", "failed", "timed_out", "cancelled", "skipped"]);

const normTrigger = (t) => (t && typeof t.every === "number" ? { ...t, every: formatDuration(t.every) } : t);

/** Trigger builders: `Trigger.cron("0 9 * * MON-FRI", { timezone: "Europe/Berlin" })`. */
export const Trigger = Object.freeze({
  once: (at, options = {}) => ({ kind: "once", at: at instanceof Date ? at.toISOString() : at, ...options }),
  cron: (expr, options = {}) => ({ kind: "cron", expr, ...options }),
  interval: (every, options = {}) => ({ kind: "interval", every: formatDuration(every), ...options }),
});

/** The JSON of a job definition (`POST /v1/jobs`) from a handler, a payload and options. */
export function jobSpec(handler, payload, options = {}) {
  const spec = { handler, ...options };
  if (payload !== undefined) spec.payload = payload;
  if (options.timeout !== undefined && options.timeout !== null) spec.timeout = formatDuration(options.timeout);
  if (options.triggers) spec.triggers = options.triggers.map(normTrigger);
  return spec;
}

export class Client {
  /** A client of one server; `token` is sent as `Authorization: Bearer`. */
  constructor(server = "http://127.0.0.1:7070", { token, timeout } = {}) {
    this.http = new Transport(server, { token, timeout });
  }

  get server() {
    return this.http.server;
  }

  /** Any API call, for routes the SDK has no method for. */
  request(method, path, body, query) {
    return this.http.request(method, path, body, { query });
  }

  // Jobs

  submit(handler, payload, options) {
    return this.http.request("POST", "/v1/jobs", jobSpec(handler, payload, options));
  }

  async submitBatch(jobs) {
    const answer = await this.http.request("POST", "/v1/jobs/batch", { jobs });
    return answer.items.map((item) => ({
      status: item.status,
      job: item.job ?? null,
      error: item.error ? new SundialError(item.error.code ?? "error", item.error.message ?? "", item.status) : null,
    }));
  }

  getJob(job) {
    return this.http.request("GET", `/v1/jobs/${segment(job)}`);
  }

  listJobs(filters = {}) {
    return this.http.request("GET", "/v1/jobs", undefined, { query: filters });
  }

  updateJob(job, changes) {
    const body = { ...changes };
    if (body.timeout !== undefined && body.timeout !== null) body.timeout = formatDuration(body.timeout);
    if (body.triggers) body.triggers = body.triggers.map(normTrigger);
    return this.http.request("PATCH", `/v1/jobs/${segment(job)}`, body);
  }

  async deleteJob(job) {
    await this.http.request("DELETE", `/v1/jobs/${segment(job)}`);
  }

  pause(job) {
    return this.http.request("POST", `/v1/jobs/${segment(job)}/pause`);
  }

  resume(job) {
    return this.http.request("POST", `/v1/jobs/${segment(job)}/resume`);
  }

  runNow(job) {
    return this.http.request("POST", `/v1/jobs/${segment(job)}/run`);
  }

  // Runs

  listRuns(filters = {}) {
    return this.http.request("GET", "/v1/runs", undefined, { query: filters });
  }

  async *iterRuns(filters = {}) {
    let cursor;
    for (;;) {
      const page = await this.listRuns({ ...filters, cursor });
      yield* page.items;
      if (!page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  getRun(runId) {
    return this.http.request("GET", `/v1/runs/${segment(runId)}`);
  }

  async waitForRun(runId, { timeout = 60_000, poll = 200, signal } = {}) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const run = await this.getRun(runId);
      if (FINISHED_STATES.includes(run.state)) return run;
      if (Date.now() >= deadline) throw new Error(`run ${runId} still ${run.state} after ${timeout} ms`);
      signal?.throwIfAborted();
      await new Promise((resolve) => setTimeout(resolve, Math.min(poll, Math.max(0, deadline - Date.now()))));
    }
  }

  cancel(runId) {
    return this.http.request("POST", `/v1/runs/${segment(runId)}/cancel`);
  }

  retry(runId) {
    return this.http.request("POST", `/v1/runs/${segment(runId)}/retry`);
  }

  // Workers

  async listWorkers() {
    const answer = await this.http.request("GET", "/v1/workers");
    return Array.isArray(answer) ? answer : answer.items;
  }
}
