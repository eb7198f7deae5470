// Types of the sundial SDK (hand-written; the package ships plain ESM JavaScript, no build step).

/** A duration: a humantime string (`"250ms"`, `"1h 30m"`) or a number of milliseconds. */
export type Duration = string | number;
/** An RFC 3339 time in UTC, as the API sends it. */
export type Time = string;

export type RunState = "pending" | "running" | "succeeded" | "failed" | "timed_out" | "cancelled" | "skipped";
export type Overlap = "allow" | "skip" | "buffer_one" | "cancel_other";
export type Misfire = "fire_once" | "skip" | "catch_up";

/** States a run does not leave by itself. */
export declare const FINISHED_STATES: readonly RunState[];

/** An error answer from the server. */
export declare class SundialError extends Error {
  constructor(code: string, message: string, status?: number | null);
  /** Machine-readable code: `not_found`, `stale_attempt`, `invalid_value`, … */
  readonly code: string;
  /** HTTP status, or null when the server could not be reached. */
  readonly status: number | null;
}

/** The server could not be reached (refused, cut, timed out). */
export declare class Unavailable extends SundialError {
  constructor(message: string, options?: { cause?: unknown });
}

/** Milliseconds in a humantime duration. */
export declare function parseDuration(text: string): number;
/** A duration for the wire (numbers are milliseconds). */
export declare function formatDuration(value: Duration): string;

interface TriggerOptions {
  start_at?: Time;
  end_at?: Time;
  max_fires?: number;
  misfire?: Misfire;
  catch_up_limit?: number;
  calendars?: string[];
}

/** A trigger as sent. */
export type TriggerSpec =
  | ({ kind: "once"; at: Time } & TriggerOptions)
  | ({ kind: "cron"; expr: string; timezone?: string } & TriggerOptions)
  | ({ kind: "interval"; every: Duration } & TriggerOptions);

/** A trigger as the server returns it. */
export interface Trigger {
  id: string;
  kind: "once" | "cron" | "interval";
  at: Time | null;
  expr: string | null;
  timezone: string | null;
  every: string | null;
  start_at: Time | null;
  end_at: Time | null;
  max_fires: number | null;
  misfire: Misfire | null;
  catch_up_limit: number | null;
  next_fire_at: Time | null;
  fires: number;
  [field: string]: unknown;
}

/** Trigger builders. */
export declare const Trigger: {
  once(at: Time | Date, options?: TriggerOptions): TriggerSpec;
  cron(expr: string, options?: TriggerOptions & { timezone?: string }): TriggerSpec;
  interval(every: Duration, options?: TriggerOptions): TriggerSpec;
};

export interface RetryPolicy {
  max_attempts?: number;
  initial_delay?: string;
  max_delay?: string;
}

/** Options of a job definition besides its handler and payload. */
export interface JobOptions {
  name?: string;
  namespace?: string;
  priority?: number;
  retry?: RetryPolicy;
  timeout?: Duration;
  overlap?: Overlap;
  paused?: boolean;
  idempotency_key?: string;
  triggers?: TriggerSpec[];
  /** Fields the SDK does not name yet (e.g. `limits`). */
  [field: string]: unknown;
}

/** A job definition as sent (`POST /v1/jobs`). */
export interface JobSpec extends JobOptions {
  handler: string;
  payload?: unknown;
}

/** A job as the server returns it. */
export interface Job {
  id: string;
  name: string;
  namespace: string;
  handler: string;
  payload: unknown;
  priority: number;
  retry: RetryPolicy | null;
  timeout: string | null;
  overlap: Overlap;
  paused: boolean;
  idempotency_key: string | null;
  triggers: Trigger[];
  created_at: Time;
  updated_at: Time;
  next_fire_time: Time | null;
  running: boolean;
  last_start_time: Time | null;
  last_end_time: Time | null;
  last_worker: string | null;
  [field: string]: unknown;
}

/** A run as the server returns it. */
export interface Run {
  id: string;
  job_id: string;
  trigger_id: string | null;
  scheduled_for: Time;
  state: RunState;
  attempt: number;
  worker_id: string | null;
  started_at: Time | null;
  finished_at: Time | null;
  output: unknown;
  error: string | null;
  reason: string | null;
  [field: string]: unknown;
}

/** A worker as `GET /v1/workers` lists it. */
export interface WorkerInfo {
  id: string;
  name: string;
  handlers: string[];
  capacity: number;
  state: "active" | "draining" | "dead";
  last_heartbeat: Time | null;
  running: number;
  [field: string]: unknown;
}

/** One page of a list; pass `next_cursor` as `cursor` for the next (null = last page). */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** One item of a batch submit: the job on 200/201, else the error. */
export interface BatchItem {
  status: number;
  job: Job | null;
  error: SundialError | null;
}

export interface RunFilters {
  job_id?: string;
  state?: RunState;
  since?: Time | Date;
  until?: Time | Date;
  limit?: number;
  cursor?: string;
}

export interface JobFilters {
  namespace?: string;
  handler?: string;
  paused?: boolean;
  limit?: number;
  cursor?: string;
}

/** The JSON of a job definition. */
export declare function jobSpec(handler: string, payload?: unknown, options?: JobOptions): JobSpec;

/** A client of one sundial server. A job reference is its id or `namespace/name`. */
export declare class Client {
  constructor(server?: string, options?: { token?: string; timeout?: number });
  readonly server: string;
  /** Any API call; the parsed JSON answer. */
  request(method: string, path: string, body?: unknown, query?: Record<string, unknown>): Promise<unknown>;
  /** Create a job; without triggers it gets one run, due now. */
  submit(handler: string, payload?: unknown, options?: JobOptions): Promise<Job>;
  /** Create many jobs in one call; each item stands alone. */
  submitBatch(jobs: JobSpec[]): Promise<BatchItem[]>;
  getJob(job: string): Promise<Job>;
  listJobs(filters?: JobFilters): Promise<Page<Job>>;
  /** Change definition fields; `triggers` replaces them as a whole. */
  updateJob(job: string, changes: Partial<JobSpec>): Promise<Job>;
  deleteJob(job: string): Promise<void>;
  pause(job: string): Promise<Job>;
  resume(job: string): Promise<Job>;
  /** Start a run of the job now (also when paused). */
  runNow(job: string): Promise<Run>;
  /** One page of runs, newest first by `scheduled_for`. */
  listRuns(filters?: RunFilters): Promise<Page<Run>>;
  /** Every run matching the filters, page after page. */
  iterRuns(filters?: Omit<RunFilters, "cursor">): AsyncGenerator<Run, void, undefined>;
  getRun(runId: string): Promise<Run>;
  /** Poll a run until it is finished; rejects after `timeout` ms (default 60 000). */
  waitForRun(runId: string, options?: { timeout?: number; poll?: number; signal?: AbortSignal }): Promise<Run>;
  /** A pending run is cancelled at once, a running one at its worker's next heartbeat. */
  cancel(runId: string): Promise<Run>;
  /** A failed, timed-out or cancelled run goes back to pending (409 `not_retryable` otherwise). */
  retry(runId: string): Promise<Run>;
  listWorkers(): Promise<WorkerInfo[]>;
}

/** Why a run's handler was told to stop. */
export type StopReason = "cancelled" | "timed_out" | "lost" | "fenced" | "shutdown";

/** What a handler knows about the run it executes. */
export interface RunContext<P = any> {
  readonly runId: string;
  readonly jobId: string;
  readonly attempt: number;
  readonly handler: string;
  readonly payload: P;
  readonly scheduledFor: Date | null;
  /** The job's per-attempt timeout in milliseconds, or null. */
  readonly timeout: number | null;
  /**
   * Aborts when the handler must stop: cancel, timeout, lost or unrenewable lease, shutdown.
   * Pass it to fetch and other APIs that take one.
   */
  readonly signal: AbortSignal;
  /** Why it must stop, once it must. */
  readonly stopReason: StopReason | null;
  isCancelled(): boolean;
}

/** A function handler: its return value (or resolved value) is the run's output. */
export type HandlerFn<P = any> = (ctx: RunContext<P>) => unknown;
/** A class handler: one instance per run. */
export type HandlerClass<P = any> = new () => { run(ctx: RunContext<P>): unknown };
/** An object handler. */
export interface HandlerObject<P = any> {
  run(ctx: RunContext<P>): unknown;
}
export type Handler<P = any> = HandlerFn<P> | HandlerClass<P> | HandlerObject<P>;

/** Throw from a handler to fail the run, still recording `output`. */
export declare class HandlerError extends Error {
  constructor(message: string, options?: { output?: unknown });
  readonly output: unknown;
}

export interface Logger {
  info?(message: string): void;
  warn?(message: string): void;
  error?(message: string): void;
}

export interface WorkerOptions {
  /** Sent as `Authorization: Bearer`. */
  token?: string;
  /** Shown in the API (default host-pid). */
  name?: string;
  /** Runs at once (default 4). */
  capacity?: number;
  /** Milliseconds one claim long-polls (default 20 000). */
  claimWait?: number;
  /** On shutdown, milliseconds running handlers may take before they are told to stop (default 30 000). */
  drainTimeout?: number;
  /** Milliseconds a stopped handler may take to return before its run is reported anyway (default 5 000). */
  stopGrace?: number;
  /** Where the worker logs (default console). */
  logger?: Logger;
}

/** A worker process's handlers and the loop that feeds them runs. */
export declare class Worker {
  constructor(server?: string, options?: WorkerOptions);
  readonly name: string;
  readonly capacity: number;
  /** The registration's id, once registered. */
  readonly workerId: string | null;
  readonly handlerNames: string[];
  /** Serve runs of `name`; returns the worker for chaining. */
  handler<P = any>(name: string, handler: Handler<P>): this;
  /** Register, claim and execute until `stop()` (or SIGTERM/SIGINT), then drain and deregister. */
  run(options?: { handleSignals?: boolean }): Promise<void>;
  /** Begin a graceful shutdown. */
  stop(): void;
}
