// The worker: register handlers, claim runs into free slots, heartbeat their leases, stop a
// run (its AbortSignal) on cancel, timeout, lost or unrenewable lease, complete it with its
// fencing token (worker_id, attempt), and drain on SIGTERM.
//
// Leases and self-fencing: each held run has a local deadline, the monotonic instant at which
// the claim or heartbeat that last renewed it was *sent* (for a long-poll claim, plus the
// `waited_ms` the server reports having held it), plus the lease, minus a margin of a fifth of
// the lease. The server started the lease no earlier, so the deadline falls before the
// server's lease end whatever the wall clocks say. When it passes without a renewal, the
// handler's signal aborts and its result is dropped: by then another worker may hold the run.
import { hostname } from "node:os";
import { performance } from "node:perf_hooks";
import { SundialError, Transport, Unavailable, formatDuration, parseDuration, segment } from "./http.js";

const CANCELLED = "cancelled"; // the server asked (heartbeat `cancel`): report cancelled
const TIMED_OUT = "timed_out"; // the job's timeout passed: report timed_out
const LOST = "lost"; // the server says the run is not ours: drop it
const FENCED = "fenced"; // the local lease deadline passed without renewal: drop it
const SHUTDOWN = "shutdown"; // the drain timeout passed: report failed (retried if it may)
const DROPPED = new Set([LOST, FENCED]);

const BACKOFF_MIN = 100;
const BACKOFF_MAX = 2000;
const CLAIM_SLACK = 30_000;
const DEREGISTER_BUDGET = 10_000;

const now = () => performance.now();
const sleep = (ms, signal) =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });

class Backoff {
  delay = BACKOFF_MIN;
  next() {
    const d = this.delay;
    this.delay = Math.min(this.delay * 2, BACKOFF_MAX);
    return d;
  }
  reset() {
    this.delay = BACKOFF_MIN;
  }
}

/** Throw from a handler to fail the run with `message`, still recording `output`. */
export class HandlerError extends Error {
  constructor(message, { output } = {}) {
    super(message);
    this.name = "HandlerError";
    this.output = output ?? null;
  }
}

const isClass = (h) => typeof h === "function" && /^class[\s{]/.test(Function.prototype.toString.call(h));

export class Worker {
  /**
   * `capacity`: runs at once; `claimWait`: ms one claim long-polls; `drainTimeout`: on
   * shutdown, ms running handlers may take before they are told to stop; `stopGrace`: ms a
   * stopped handler may take to return before its run is reported anyway.
   */
  constructor(server = "http://127.0.0.1:7070", options = {}) {
    const { token, name, capacity = 4, claimWait = 20_000, drainTimeout = 30_000, stopGrace = 5_000, logger } = options;
    this.http = new Transport(server, { token });
    this.name = name ?? `${hostname()}-${process.pid}`;
    this.capacity = Math.max(1, capacity | 0);
    this.claimWait = claimWait;
    this.drainTimeout = drainTimeout;
    this.stopGrace = stopGrace;
    this.log = logger ?? console;
    this.handlers = new Map();
    this.held = new Map();
    this.free = this.capacity;
    this.workerId = null;
    this.stopping = new AbortController();
    this.slotFreed = null;
    this.done = false;
  }

  /**
   * Serve runs of `name` with a function `(ctx) => output` (sync or async), a class whose
   * instances (one per run) have `run(ctx)`, or an object with `run(ctx)`. Returns the worker.
   */
  handler(name, handler) {
    const ok = typeof handler === "function" || typeof handler?.run === "function";
    if (!ok) throw new TypeError(`handler ${JSON.stringify(name)}: expected a function, a class with run(ctx), or an object with run(ctx)`);
    this.handlers.set(name, handler);
    return this;
  }

  get handlerNames() {
    return [...this.handlers.keys()].sort();
  }

  /** Begin a graceful shutdown: claim nothing new, let running handlers finish, deregister. */
  stop() {
    if (!this.stopping.signal.aborted) this.stopping.abort();
    this.#wake();
  }

  /**
   * Register, claim and execute runs until `stop()` (or SIGTERM/SIGINT when
   * `handleSignals`); then drain and deregister. Resolves when the worker is gone.
   */
  async run({ handleSignals = true } = {}) {
    const onSignal = () => this.stop();
    if (handleSignals) {
      process.on("SIGTERM", onSignal);
      process.on("SIGINT", onSignal);
    }
    try {
      if (!(await this.#register())) return;
      const heartbeats = this.#heartbeatLoop();
      await this.#claimLoop();
      await this.#drain();
      this.done = true;
      this.#wakeHeartbeat?.();
      await heartbeats;
      await this.#deregister();
    } finally {
      if (handleSignals) {
        process.off("SIGTERM", onSignal);
        process.off("SIGINT", onSignal);
      }
    }
  }

  #wake() {
    const w = this.slotFreed;
    this.slotFreed = null;
    w?.();
  }

  /** Resolves when a slot frees or the worker stops, or after `ms` (when given). */
  #changed(ms) {
    return new Promise((resolve) => {
      const t = ms === undefined ? null : setTimeout(resolve, Math.max(0, ms));
      const prev = this.slotFreed;
      this.slotFreed = () => {
        prev?.();
        if (t) clearTimeout(t);
        resolve();
      };
    });
  }

  async #register() {
    const body = { name: this.name, handlers: this.handlerNames, capacity: this.capacity };
    const backoff = new Backoff();
    while (!this.stopping.signal.aborted) {
      let me;
      try {
        me = await this.http.request("POST", "/v1/workers", body);
      } catch (e) {
        if (!(e instanceof Unavailable)) throw e;
        this.log.warn?.(`sundial: register: server unavailable (${e.message}); retrying`);
        await sleep(backoff.next(), this.stopping.signal);
        continue;
      }
      this.workerId = me.id;
      this.lease = parseDuration(me.lease);
      if (!(this.lease > 0)) throw new SundialError("protocol", `lease: must be positive, got ${me.lease}`);
      this.margin = this.lease / 5;
      const every = parseDuration(me.heartbeat_interval);
      // A heartbeat must be able to fail once and still renew before the deadline.
      const limit = (this.lease - this.margin) / 2;
      this.heartbeatEvery = every > 0 && every <= limit ? every : limit;
      this.log.info?.(
        `sundial: registered as ${me.id} (lease ${me.lease}, heartbeat every ${Math.round(this.heartbeatEvery)} ms, handlers ${this.handlerNames.join(", ")})`,
      );
      return true;
    }
    return false;
  }

  async #deregister() {
    const started = now();
    const backoff = new Backoff();
    for (;;) {
      try {
        await this.http.request("DELETE", `/v1/workers/${segment(this.workerId)}`, undefined, { timeout: DEREGISTER_BUDGET });
        this.log.info?.("sundial: deregistered");
        return;
      } catch (e) {
        if (e instanceof Unavailable && now() - started < DEREGISTER_BUDGET) {
          await sleep(backoff.next());
          continue;
        }
        // The server marks silent workers dead on its own; nothing is lost.
        this.log.warn?.(`sundial: deregister failed: ${e.message}`);
        return;
      }
    }
  }

  async #claimLoop() {
    const backoff = new Backoff();
    const idle = new Backoff();
    const wait = formatDuration(this.claimWait);
    let outage = false;
    const stop = this.stopping.signal;
    while (!stop.aborted) {
      while (this.free <= 0 && !stop.aborted) await this.#changed();
      if (stop.aborted) return;
      const workerId = this.workerId;
      const sent = now();
      let answer;
      try {
        answer = await this.http.request(
          "POST",
          `/v1/workers/${segment(workerId)}/claim`,
          { max: this.free, wait },
          { timeout: this.claimWait + CLAIM_SLACK, signal: stop },
        );
      } catch (e) {
        if (stop.aborted) return;
        if (e instanceof Unavailable) {
          if (!outage) this.log.warn?.(`sundial: claim: server unavailable (${e.message}); retrying with backoff`);
          outage = true;
          await sleep(backoff.next(), stop);
        } else if (e.status === 404) {
          // The server forgot this worker: what it holds is not ours any more.
          this.log.warn?.("sundial: claim: worker unknown to the server; registering again");
          for (const r of this.held.values()) this.#stop(r, LOST);
          await this.#register();
        } else {
          this.log.error?.(`sundial: claim refused: ${e.message}`);
          await sleep(backoff.next(), stop);
        }
        continue;
      }
      if (outage) this.log.info?.("sundial: server reachable again");
      outage = false;
      backoff.reset();
      const runs = answer?.runs ?? [];
      if (runs.length === 0) {
        // A server that answers empty claims at once is not hammered.
        if (now() - sent < this.claimWait / 2) await sleep(idle.next(), stop);
        else idle.reset();
        continue;
      }
      idle.reset();
      // The server claimed no earlier than the send time plus how long it held the poll.
      const deadline = sent + (answer.waited_ms ?? 0) + this.lease - this.margin;
      for (const claimed of runs) this.#accept(claimed, workerId, deadline);
      // A long poll leaves fresh runs little local lease: renew them now.
      if (deadline - now() < 2 * this.heartbeatEvery) this.#wakeHeartbeat?.();
    }
  }

  #accept(claimed, workerId, deadline) {
    const previous = this.held.get(claimed.run_id);
    if (previous) this.#stop(previous, LOST); // claimed again at a newer attempt
    const controller = new AbortController();
    let timeoutMs = null;
    let timeoutError = null;
    if (claimed.timeout) {
      try {
        timeoutMs = parseDuration(claimed.timeout);
      } catch {
        timeoutError = `timeout: not a duration: ${JSON.stringify(claimed.timeout)}`;
      }
    }
    const r = {
      id: claimed.run_id,
      attempt: claimed.attempt,
      workerId,
      deadline,
      controller,
      stop: null,
      settled: false,
      timers: new Set(),
      ctx: null,
    };
    r.ctx = {
      runId: claimed.run_id,
      jobId: claimed.job_id,
      attempt: claimed.attempt,
      handler: claimed.handler,
      payload: claimed.payload ?? null,
      scheduledFor: claimed.scheduled_for ? new Date(claimed.scheduled_for) : null,
      timeout: timeoutMs,
      signal: controller.signal,
      get stopReason() {
        return r.stop;
      },
      isCancelled: () => controller.signal.aborted,
    };
    this.held.set(r.id, r);
    this.free -= 1;
    this.#armFence(r);
    if (timeoutMs !== null) this.#timer(r, timeoutMs, () => this.#stop(r, TIMED_OUT));
    this.#execute(r, timeoutError);
  }

  #timer(r, ms, fn) {
    const t = setTimeout(() => {
      r.timers.delete(t);
      fn();
    }, Math.max(0, ms));
    r.timers.add(t);
    return t;
  }

  /** (Re)arm the run's self-fencing timer at its deadline. */
  #armFence(r) {
    if (r.fence) {
      clearTimeout(r.fence);
      r.timers.delete(r.fence);
    }
    r.fence = this.#timer(r, r.deadline - now(), () => {
      if (now() >= r.deadline) this.#stop(r, FENCED);
      else this.#armFence(r);
    });
  }

  async #execute(r, timeoutError) {
    const handler = this.handlers.get(r.ctx.handler);
    let outcome;
    if (!handler) outcome = { state: "failed", output: null, error: `no handler ${JSON.stringify(r.ctx.handler)} on this worker` };
    else if (timeoutError) outcome = { state: "failed", output: null, error: timeoutError };
    else {
      try {
        let value;
        if (isClass(handler)) value = await new handler().run(r.ctx);
        else if (typeof handler === "function") value = await handler(r.ctx);
        else value = await handler.run(r.ctx);
        outcome = { state: "succeeded", output: value === undefined ? null : value, error: null };
      } catch (e) {
        const message = e instanceof Error ? (e.name === "Error" || e instanceof HandlerError ? e.message : `${e.name}: ${e.message}`) : String(e);
        outcome = { state: "failed", output: e instanceof HandlerError ? e.output : null, error: message };
      }
    }
    await this.#settle(r, outcome);
  }

  /** Tell a run's handler to stop. `lost`/`fenced` override other reasons. */
  #stop(r, reason) {
    if (r.settled && !DROPPED.has(reason)) return;
    if (r.stop !== null && (DROPPED.has(r.stop) || !DROPPED.has(reason))) return;
    if (DROPPED.has(reason)) {
      const why = reason === FENCED ? "lease could not be renewed in time" : "no longer held by this worker";
      this.log.warn?.(`sundial: run ${r.id} attempt ${r.attempt}: ${why}; stopping it without completing`);
    } else {
      this.log.info?.(`sundial: run ${r.id} attempt ${r.attempt}: stopping (${reason})`);
    }
    r.stop = reason;
    r.controller.abort(new Error(`run stopped: ${reason}`));
    if (!r.settled) {
      const grace = DROPPED.has(reason) ? this.margin / 2 : this.stopGrace;
      this.#timer(r, grace, () => {
        if (r.settled) return;
        this.log.warn?.(`sundial: run ${r.id} attempt ${r.attempt}: handler ignored its stop for ${grace} ms; settling without it`);
        this.#settle(r, { state: "failed", output: null, error: "handler did not stop" });
      });
    }
  }

  /** The run's one ending: report it (or drop it when it is not ours), then free its slot. */
  async #settle(r, outcome) {
    if (r.settled) return;
    r.settled = true;
    if (r.stop === null && now() >= r.deadline) this.#stop(r, FENCED);
    let { state, output, error } = outcome;
    if (r.stop === CANCELLED) [state, error] = ["cancelled", "cancelled"];
    else if (r.stop === TIMED_OUT) [state, error] = ["timed_out", `timed out after ${formatDuration(r.ctx.timeout ?? 0)}`];
    else if (r.stop === SHUTDOWN) [state, error] = ["failed", "worker shut down before the run finished"];
    try {
      if (!DROPPED.has(r.stop)) await this.#complete(r, { state, output, error });
    } finally {
      for (const t of r.timers) clearTimeout(t);
      r.timers.clear();
      if (this.held.get(r.id) === r) this.held.delete(r.id);
      this.free += 1;
      this.#wake();
    }
  }

  async #complete(r, { state, output, error }) {
    let body = { worker_id: r.workerId, attempt: r.attempt, state, output, error };
    try {
      JSON.stringify(body);
    } catch (e) {
      body = { ...body, state: "failed", output: null, error: `output is not JSON: ${e.message}` };
    }
    const backoff = new Backoff();
    for (;;) {
      const left = r.deadline - now();
      if (DROPPED.has(r.stop) || left <= 0) {
        this.log.warn?.(`sundial: run ${r.id} attempt ${r.attempt}: lease ran out before the complete was accepted; result dropped`);
        return;
      }
      try {
        await this.http.request("POST", `/v1/runs/${segment(r.id)}/complete`, body, { timeout: left });
        return;
      } catch (e) {
        if (e instanceof Unavailable) {
          await sleep(Math.min(backoff.next(), left));
        } else if (e.code === "stale_attempt") {
          this.log.warn?.(`sundial: run ${r.id} attempt ${r.attempt}: complete rejected as stale (${e.message}); dropped`);
          return;
        } else {
          this.log.error?.(`sundial: run ${r.id} attempt ${r.attempt}: complete refused: ${e.message}`);
          return;
        }
      }
    }
  }

  #wakeHeartbeat = null;

  async #heartbeatLoop() {
    const backoff = new Backoff();
    let delay = this.heartbeatEvery;
    let failing = false;
    while (!this.done) {
      await new Promise((resolve) => {
        const wake = () => {
          clearTimeout(t);
          this.#wakeHeartbeat = null;
          resolve();
        };
        const t = setTimeout(wake, delay);
        this.#wakeHeartbeat = wake;
      });
      if (this.done) return;
      const listed = new Map(this.held);
      const sent = now();
      let answer;
      try {
        answer = await this.http.request(
          "POST",
          `/v1/workers/${segment(this.workerId)}/heartbeat`,
          { runs: [...listed.values()].map((r) => ({ run_id: r.id, attempt: r.attempt })) },
          { timeout: this.heartbeatEvery },
        );
      } catch (e) {
        if (e.status === 404) {
          // The server forgot this worker and recovered its runs: complete none.
          this.log.warn?.("sundial: heartbeat: worker unknown to the server; dropping held runs");
          for (const r of listed.values()) this.#stop(r, LOST);
          delay = this.heartbeatEvery;
        } else {
          // Once per outage; the claim loop reports it too.
          if (!failing) this.log.warn?.(`sundial: heartbeat failed (${e.message}); ${listed.size} runs held; retrying`);
          failing = true;
          delay = Math.min(backoff.next(), this.heartbeatEvery);
        }
        continue;
      }
      if (failing) this.log.info?.("sundial: heartbeats renewed again");
      failing = false;
      backoff.reset();
      delay = this.heartbeatEvery;
      const deadline = sent + this.lease - this.margin;
      const lost = new Set(answer?.lost ?? []);
      const cancel = new Set(answer?.cancel ?? []);
      for (const [id, r] of listed) {
        if (this.held.get(id) !== r) continue; // finished, or claimed again meanwhile
        if (lost.has(id)) {
          this.#stop(r, LOST);
          continue;
        }
        if (cancel.has(id)) this.#stop(r, CANCELLED);
        if (deadline > r.deadline) {
          r.deadline = deadline;
          if (!r.settled && r.stop === null) this.#armFence(r);
        }
      }
    }
  }

  async #drain() {
    if (this.held.size === 0) return;
    this.log.info?.(`sundial: shutting down: draining ${this.held.size} running runs`);
    const end = now() + this.drainTimeout;
    while (this.held.size > 0 && now() < end) {
      await this.#changed(end - now());
    }
    if (this.held.size === 0) return;
    this.log.warn?.(`sundial: drain timeout passed: stopping ${this.held.size} runs`);
    for (const r of this.held.values()) this.#stop(r, SHUTDOWN);
    const stopEnd = now() + this.stopGrace + 5_000;
    while (this.held.size > 0 && now() < stopEnd) {
      await this.#changed(stopEnd - now());
    }
  }
}
