//! The `Store` trait: every read and write sundial makes, as domain operations.
//!
//! Two implementations share this contract, [`sqlite::SqliteStore`] (one node, one file) and
//! [`postgres::PostgresStore`] (a cluster of stateless nodes); the conformance suite in
//! [`conformance`] runs against both. No driver type appears in this API: backends map driver
//! errors to [`StoreError`] in one function each.
//!
//! Layout:
//! * this file: the trait, its parameter and result types, [`StoreError`];
//! * `plan` and `fire`: the decisions both backends share, as pure functions with their unit
//!   tests (submissions and conflicts, run reasons, the fencing check, settlements, stats; turning
//!   due triggers into runs). A backend reads, calls one, and writes the answer;
//! * `rows` (row shapes and their domain conversion), `listing` (list queries), `reads` (the
//!   simple reads: by id, lists, next due times, stats) and `writes` (the statements inside write
//!   transactions whose SQL both dialects share), generic over the database given the dialect's
//!   differences (`writes::Dialect`): SQL and decoding written once for both;
//! * [`sqlite`] and [`postgres`]: `mod.rs` (connecting, the transaction type, error mapping, and for
//!   PostgreSQL the lock order) with the few `Store` methods of its own, the rest delegated by
//!   `store_by_noun!` (the one table of contents, in this file), plus one
//!   file of SQL per noun (`jobs.rs`, `triggers.rs` (with backfills), `runs.rs`, `leases.rs`,
//!   `workers.rs`, `limits.rs`, `calendars.rs`, PostgreSQL's `listener.rs`), named as the
//!   [`conformance`] suite's files are, holding what the dialect writes differently.
//!
//! Methods take `now` from the caller's [`Clock`](crate::clock::Clock) rather than reading the
//! database clock, so every time-dependent behaviour is testable with a manual clock.
//!
//! The guarantees live here:
//! * durable submit: [`Store::job_create_many`] returns only after its transaction commits;
//! * once per due time: [`Store::trigger_fire_due`] inserts runs and advances the trigger in one
//!   transaction, under `UNIQUE(trigger_id, fire_time)`;
//! * fenced leases: [`Store::run_heartbeat`] and [`Store::run_complete_many`] change a run only
//!   while it is `running` under the caller's [`Lease`] (`worker_id`, `attempt`).

#[cfg(feature = "conformance")]
pub mod conformance;
pub(crate) mod counts;
pub(crate) mod cursor;
pub(crate) mod fire;
pub(crate) mod limits;
mod listing;
pub(crate) mod plan;
pub mod postgres;
mod reads;
pub(crate) mod rows;
pub mod sqlite;
mod writes;

use crate::domain::{Attempt, Job, JobSpec, Lease, Run, RunState, Timestamp, Worker};
use crate::domain::{
    BackfillOutcome, BackfillRequest, CalendarDef, HandlerQueue, LimitBounds, LimitDef, LimitKey, RunBucket,
};
use crate::schedule::Calendar;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong, in domain terms.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such job, run or worker.
    #[error("{0} not found")]
    NotFound(String),
    /// The name or idempotency key is taken by a different definition.
    #[error("{message}")]
    Conflict {
        /// `name_conflict` or `idempotency_conflict`.
        code: &'static str,
        /// Human sentence.
        message: String,
    },
    /// The run is no longer held by this `(worker_id, attempt)`.
    #[error("run {0} is not held by this worker at this attempt")]
    StaleAttempt(String),
    /// The run already finished.
    #[error("run {0} already finished")]
    AlreadyFinished(String),
    /// An operator's retry of a run that is not `failed`, `timed_out` or `cancelled`.
    #[error("{0}")]
    NotRetryable(String),
    /// A parameter the store cannot use (e.g. a malformed cursor).
    #[error("{0}")]
    Invalid(String),
    /// The database cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (a bug or corrupted data).
    #[error("store error: {0}")]
    Internal(String),
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a backend can do, so callers adapt without naming the backend.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// Several processes may share the database (PostgreSQL); SQLite is single node.
    pub multi_node: bool,
}

/// A submission to store.
#[derive(Debug, Clone)]
pub struct JobCreate {
    /// Validated definition.
    pub spec: JobSpec,
    /// Key derived by the ingest path when the message carried none (e.g. Kafka offsets).
    pub derived_idempotency_key: Option<String>,
}

/// Outcome of one submission.
#[derive(Debug, Clone)]
pub struct JobCreated {
    /// The stored job.
    pub job: Job,
    /// False when the submission matched an existing job (idempotent replay → HTTP 200).
    pub created: bool,
}

/// Filters for listing jobs (newest first).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only these namespaces (a namespace-bound token's); `Some` of none matches nothing.
    pub namespaces: Option<Vec<String>>,
    /// Only the job of this name (with `namespace`, at most one).
    pub name: Option<String>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Only paused or only unpaused.
    pub paused: Option<bool>,
    /// Page size.
    pub limit: u32,
    /// From a previous page.
    pub cursor: Option<String>,
}

/// Filters for listing runs (newest `scheduled_for` first).
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only this job's runs.
    pub job_id: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// `scheduled_for >= since`.
    pub since: Option<Timestamp>,
    /// `scheduled_for < until`.
    pub until: Option<Timestamp>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only these namespaces (a namespace-bound token's); `Some` of none matches nothing.
    pub namespaces: Option<Vec<String>>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Page size.
    pub limit: u32,
    /// From a previous page.
    pub cursor: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Items.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Missed due times of one trigger in one pass (for the misfire metric and log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Misfired {
    /// The trigger's misfire policy (`fire_once`, `skip`, `catch_up`).
    pub policy: crate::domain::Misfire,
    /// Its job.
    pub job_id: String,
    /// The trigger.
    pub trigger_id: String,
    /// How many due times were missed.
    pub count: u64,
}

/// What the scheduler did in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FireReport {
    /// Triggers advanced.
    pub triggers: u64,
    /// Runs created `pending`.
    pub runs_pending: u64,
    /// Runs created `skipped` (overlap or misfire).
    pub runs_skipped: u64,
    /// Running runs asked to stop by `cancel_other`.
    pub runs_cancel_requested: u64,
    /// Triggers that had missed due times, one entry each.
    pub misfires: Vec<Misfired>,
}

/// A claim request from a worker.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// The claiming worker.
    pub worker_id: String,
    /// At most this many runs.
    pub max: u32,
    /// Lease length.
    pub lease: Duration,
    /// Now.
    pub now: Timestamp,
}

/// A run handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedRun {
    /// The run.
    pub run_id: String,
    /// Fencing token part: this claim's attempt.
    pub attempt: u32,
    /// Its job.
    pub job_id: String,
    /// Handler to call.
    pub handler: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Per-attempt timeout.
    pub timeout: Option<Duration>,
    /// When it was due.
    pub scheduled_for: Timestamp,
    /// Lease end.
    pub lease_expires_at: Timestamp,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatOutcome {
    /// New lease end for the runs still held.
    pub lease_expires_at: Option<Timestamp>,
    /// Runs to stop and complete as `cancelled`.
    pub cancel: Vec<String>,
    /// Runs no longer this worker's: stop them, do not complete them.
    pub lost: Vec<String>,
}

/// A worker's report that an attempt ended.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The run and the fencing token it was claimed under.
    pub lease: Lease,
    /// `succeeded`, `failed`, `timed_out` or `cancelled`.
    pub state: RunState,
    /// Handler output.
    pub output: Option<serde_json::Value>,
    /// Error text.
    pub error: Option<String>,
    /// The worker said another attempt cannot help: a failure is not retried.
    pub no_retry: bool,
}

impl Completion {
    /// How the attempt ended, for settling it.
    pub(crate) fn ended(&self) -> crate::attempt::Ended {
        match self.no_retry {
            true => crate::attempt::Ended::Final(self.state),
            false => crate::attempt::Ended::Reported(self.state),
        }
    }
}

/// Counts for metrics and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Runs per state.
    pub runs_by_state: Vec<(RunState, u64)>,
    /// Pending runs already due.
    pub runs_due: u64,
    /// Seconds the oldest due pending run has waited.
    pub oldest_due_wait_s: f64,
    /// Jobs stored.
    pub jobs: u64,
    /// Triggers with a fire left.
    pub triggers_active: u64,
    /// Workers per state.
    pub workers_by_state: Vec<(crate::domain::WorkerState, u64)>,
}

/// The most buckets one [`RunStatsQuery`] may ask for (a day of minutes).
pub const MAX_STAT_BUCKETS: u64 = 1440;

/// `GET /v1/stats/runs`: `buckets` consecutive buckets of `step` from `from` (a multiple of `step`
/// since the Unix epoch), over the runs the filters match. Build it with [`RunStatsQuery::window`].
#[derive(Debug, Clone, Default)]
pub struct RunStatsQuery {
    /// The first bucket's start.
    pub from: Timestamp,
    /// Bucket length (whole microseconds, at least one).
    pub step: Duration,
    /// How many buckets (at most [`MAX_STAT_BUCKETS`]).
    pub buckets: u32,
    /// Only runs in these namespaces; `None` for every namespace.
    pub namespaces: Option<Vec<String>>,
    /// Only this job's runs.
    pub job_id: Option<String>,
    /// Only this handler's runs.
    pub handler: Option<String>,
}

/// Why a stats window cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsWindowError {
    /// The step is zero.
    ZeroStep,
    /// `until` is not after `since`.
    Empty,
    /// The window holds this many buckets, more than [`MAX_STAT_BUCKETS`].
    TooMany(u64),
}

impl RunStatsQuery {
    /// The buckets covering `[since, until)`: from the one holding `since` to the one holding the
    /// instant before `until`, each a multiple of `step` since the epoch (whole buckets: the first
    /// and last count their runs outside the range too, so a bucket means the same in every query).
    pub fn window(
        since: Timestamp,
        until: Timestamp,
        step: Duration,
    ) -> std::result::Result<(Timestamp, u32), StatsWindowError> {
        let step = rows::dur_us(step);
        if step <= 0 {
            return Err(StatsWindowError::ZeroStep);
        }
        let (since, until) = (rows::us(since), rows::us(until));
        if until <= since {
            return Err(StatsWindowError::Empty);
        }
        let first = since.div_euclid(step);
        let last = (until - 1).div_euclid(step);
        let n = (last - first + 1) as u64;
        if n > MAX_STAT_BUCKETS {
            return Err(StatsWindowError::TooMany(n));
        }
        Ok((rows::ts(first * step), n as u32))
    }
}

/// Settings the reaper passes to [`Store::run_reap`].
#[derive(Debug, Clone, Copy)]
pub struct ReapParams {
    /// Now.
    pub now: Timestamp,
    /// How long past its timeout a running run may go unreported before the server records
    /// `timed_out` itself.
    pub timeout_grace: Duration,
    /// Workers silent this long are `dead`.
    pub dead_after: Duration,
    /// Batch size.
    pub limit: u32,
}

/// What the reaper did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Runs whose lease expired (or whose worker died), by the state they went to.
    pub expired: Vec<(String, RunState)>,
    /// Runs the server timed out itself.
    pub timed_out: Vec<(String, RunState)>,
    /// Workers marked dead.
    pub workers_dead: u64,
}

/// Cross-node wake-ups: each `recv` returns when some node committed runs that may now be
/// claimable (PostgreSQL LISTEN/NOTIFY). A return is a hint to look, never a promise.
#[async_trait::async_trait]
pub trait Wakeups: Send {
    /// Waits for the next notice.
    async fn recv(&mut self) -> Result<()>;
}

/// The persistence seam. See the module docs for which method keeps which guarantee.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Stores submissions in one transaction (group commit); each item succeeds or fails alone.
    /// Returns after the commit: an `Ok` item is durable.
    async fn job_create_many(&self, jobs: Vec<JobCreate>, now: Timestamp) -> Result<Vec<Result<JobCreated>>>;
    /// One job with its triggers and derived fields (`now` shows a paused job's next fire).
    async fn job_get(&self, id: &str, now: Timestamp) -> Result<Job>;
    /// Jobs, newest first.
    async fn job_list(&self, filter: &JobFilter, now: Timestamp) -> Result<Page<Job>>;
    /// Replaces the definition (triggers as a whole).
    async fn job_update(&self, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job>;
    /// Deletes the job and its triggers; its pending runs become `cancelled` (`job deleted`).
    async fn job_delete(&self, id: &str, now: Timestamp) -> Result<()>;
    /// Pauses or resumes.
    async fn job_set_paused(&self, id: &str, paused: bool, now: Timestamp) -> Result<Job>;
    /// A manual run, due now (runs even when the job is paused).
    async fn job_run_now(&self, id: &str, now: Timestamp) -> Result<Run>;

    /// Fires up to `limit` due triggers: creates their runs (overlap and misfire applied) and
    /// advances them, each trigger in one transaction with its runs.
    async fn trigger_fire_due(&self, now: Timestamp, limit: u32, misfire_threshold: Duration) -> Result<FireReport>;
    /// The earliest `next_fire_at` of an unpaused trigger, so the scheduler sleeps until then.
    async fn trigger_next_due(&self) -> Result<Option<Timestamp>>;

    /// One run.
    async fn run_get(&self, id: &str) -> Result<Run>;
    /// Runs, newest `scheduled_for` first.
    async fn run_list(&self, filter: &RunFilter) -> Result<Page<Run>>;
    /// Cancels a pending run at once; marks a running one `cancel_requested`.
    async fn run_cancel(&self, id: &str, now: Timestamp) -> Result<Run>;
    /// An operator's retry: a `failed`, `timed_out` or `cancelled` run goes back to `pending`,
    /// due now, with a full set of attempts from its current one ([`StoreError::NotRetryable`]
    /// otherwise).
    async fn run_retry(&self, id: &str, now: Timestamp) -> Result<Run>;
    /// Every attempt of a run, oldest first (empty for a run never claimed).
    async fn run_attempts(&self, id: &str) -> Result<Vec<Attempt>>;
    /// [`run_cancel`](Self::run_cancel) of each run, in one transaction; one outcome per id, in
    /// order (a refusal is the item's: `NotFound`, `AlreadyFinished`).
    async fn run_cancel_many(&self, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>>;
    /// [`run_retry`](Self::run_retry) of each run, in one transaction; one outcome per id, in
    /// order (a refusal is the item's: `NotFound`, `NotRetryable`).
    async fn run_retry_many(&self, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>>;
    /// Claims due pending runs of the worker's handlers (and of its namespaces, when it was
    /// registered with some), by priority then in fair turns across
    /// first keys, each only while the limits on its keys have room (see [`limits`]).
    /// Each claim bumps `attempt` and sets a lease. Counts as the worker's sign of life.
    async fn run_claim(&self, params: &ClaimParams) -> Result<Vec<ClaimedRun>>;
    /// Extends the leases `held` that `worker_id` still holds; a sign of life.
    async fn run_heartbeat(
        &self,
        worker_id: &str,
        held: &[Lease],
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatOutcome>;
    /// Records ended attempts, fenced by their [`Lease`]; failures with attempts left go
    /// back to `pending` after the backoff. One transaction for the batch.
    async fn run_complete_many(&self, completions: Vec<Completion>, now: Timestamp) -> Result<Vec<Result<Run>>>;
    /// Expired leases, overrun timeouts and silent workers: retry or finish, with a reason.
    async fn run_reap(&self, params: &ReapParams) -> Result<ReapReport>;
    /// The earliest `scheduled_for` later than `after` among pending unheld runs, so idle
    /// claimers know when to look again. (Only later ones: the index entries of runs claimed
    /// already sort before `after`, and on PostgreSQL they stay until vacuum.)
    async fn run_next_pending(&self, after: Timestamp) -> Result<Option<Timestamp>>;
    /// Deletes finished runs that finished before `before`, at most `limit`.
    async fn run_prune(&self, before: Timestamp, limit: u32) -> Result<u64>;

    /// Registers a worker; its claims lease only runs of `namespaces` (`None`: every namespace).
    async fn worker_register(
        &self,
        name: &str,
        handlers: &[String],
        capacity: u32,
        namespaces: Option<&[String]>,
        now: Timestamp,
    ) -> Result<Worker>;
    /// One worker.
    async fn worker_get(&self, id: &str) -> Result<Worker>;
    /// All workers not deregistered, newest first.
    async fn worker_list(&self) -> Result<Vec<Worker>>;
    /// Deregisters: the worker drains (claims nothing new); it is forgotten once it holds nothing.
    async fn worker_deregister(&self, id: &str, now: Timestamp) -> Result<()>;
    /// Forgets (deletes) up to `limit` workers that are `dead` and silent since before `before`
    /// and hold no running run; returns how many. A forgotten worker's claims and heartbeats are
    /// `NotFound`: it registers again.
    async fn worker_forget_dead(&self, before: Timestamp, limit: u32) -> Result<u64>;

    /// Counts for metrics.
    async fn stats(&self, now: Timestamp) -> Result<Stats>;
    /// Runs finished per state, attempts started and their due → start lag, per time bucket:
    /// every bucket of the query, oldest first.
    async fn stats_runs(&self, q: &RunStatsQuery) -> Result<Vec<RunBucket>>;
    /// The queue of every handler with a pending or running run (in `namespaces`, `None` for
    /// all) or a live worker, by handler name; due is as of `now`.
    async fn stats_handlers(&self, namespaces: Option<&[String]>, now: Timestamp) -> Result<Vec<HandlerQueue>>;

    /// Creates or replaces the limit under a key or pattern (a replace keeps `created_at`).
    async fn limit_put(&self, key: &LimitKey, bounds: LimitBounds, now: Timestamp) -> Result<LimitDef>;
    /// Every limit definition.
    async fn limit_defs(&self) -> Result<Vec<LimitDef>>;
    /// Deletes the limit under a key or pattern; `NotFound` when there is none.
    async fn limit_delete(&self, key: &LimitKey) -> Result<()>;
    /// Runs `running` per concrete key (keys with none are absent).
    async fn limit_running(&self, keys: &[String]) -> Result<HashMap<String, u64>>;

    /// Creates or replaces a calendar (a replace keeps `created_at`); `exclude` is stored as sent.
    /// In the same transaction the triggers naming it get their `next_fire_at` recomputed from
    /// `now` on (a change applies from the next fire on).
    async fn calendar_put(
        &self,
        calendar: &Calendar,
        exclude: &[serde_json::Value],
        now: Timestamp,
    ) -> Result<CalendarDef>;
    /// One calendar; `NotFound` when there is none.
    async fn calendar_get(&self, name: &str) -> Result<CalendarDef>;
    /// Every calendar, by name.
    async fn calendar_list(&self) -> Result<Vec<CalendarDef>>;
    /// Deletes a calendar: `NotFound` when there is none, `Conflict` (`calendar_in_use`) while a
    /// trigger names it.
    async fn calendar_delete(&self, name: &str) -> Result<()>;

    /// A backfill, in one transaction: one run per due time of the job's triggers (or the one
    /// named) in `[from, until)` that has none yet (the once-per-due-time key), due now, with the
    /// lasting note `backfill`; neither `fires` nor `next_fire_at` changes. A bad range or
    /// trigger is [`StoreError::Invalid`] naming the field.
    async fn job_backfill(&self, id: &str, req: &BackfillRequest, now: Timestamp) -> Result<BackfillOutcome>;

    /// Subscribes to other nodes' "runs ready" notices; `None` when the backend serves one
    /// node (in-process signals then cover every change).
    async fn wakeups(&self) -> Result<Option<Box<dyn Wakeups>>> {
        Ok(None)
    }
}

/// The one outcome of a batch of one: a single-run cancel or retry is the batch version on one
/// id, so each rule is written once per backend.
pub(crate) fn only_item(batch: Result<Vec<Result<Run>>>) -> Result<Run> {
    batch?.pop().unwrap_or_else(|| Err(StoreError::Internal("a batch of one answered nothing".into())))
}

/// A backend's `impl Store` (`$db` is its database): the methods it writes itself
/// (`capabilities`, `ping`, and for PostgreSQL `wakeups`), then every other method. The table of
/// contents is written once here, so the two backends cannot list different things; so are the
/// methods whose steps are the same on both:
/// * the simple reads, on the shared [`reads::Reader`] (the backend's `reader()`, and
///   `fresh_reader()` for a read that must see the last commit at once), and the paged lists and
///   stats series on its pool;
/// * the single-statement writes, the job writes other than submissions, the backfill and the
///   calendar writes: the shared statements (`writes::Writes`, as `Shared`) in the backend's
///   transaction (`begin()`, or `one_write()`), with its few hooks of the same name for what
///   differs (`lock_triggers_of`, `notify_ready`, `ready_anywhere`, `cancel_pending`, `jobs::store_triggers`,
///   `runs::insert_all`, `calendars::move_triggers`; SQLite's locks and notices are no-ops).
///
/// The rest is delegated to the per-noun module of the backend's folder (`jobs`, `triggers`,
/// `runs`, `leases`, `limits`).
macro_rules! store_by_noun {
    ($store:ty, $db:ty { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl Store for $store {
            $($own)*

            async fn job_create_many(&self, jobs: Vec<JobCreate>, now: Timestamp) -> Result<Vec<Result<JobCreated>>> {
                jobs::create_many(self, jobs, now).await
            }

            async fn job_get(&self, id: &str, now: Timestamp) -> Result<Job> {
                self.reader().job(id, now).await
            }

            async fn job_list(&self, f: &JobFilter, now: Timestamp) -> Result<Page<Job>> {
                use $crate::store::listing::{job_query, split_page};
                let reads = self.reader();
                let mut q = job_query::<$db>(f)?;
                let mut rows: Vec<JobRow> = q.build_query_as().fetch_all(reads.pool).await.map_err(db_err)?;
                let next_cursor = split_page(&mut rows, f.limit, |r| (r.created_at, r.id.as_str()));
                Ok(Page { items: reads.with_triggers(rows, now).await?, next_cursor })
            }

            async fn job_update(&self, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job> {
                let mut tx = self.begin().await?;
                lock_triggers_of(&mut tx, id).await?;
                let was_paused = Shared::replace_job(&mut tx, id, &spec, now).await?;
                jobs::store_triggers(&mut tx, id, &spec, now).await?;
                if was_paused != spec.paused {
                    Shared::hold_runs(&mut tx, &[id.to_string()], spec.paused).await?;
                }
                tx.commit().await.map_err(db_err)?;
                if was_paused && !spec.paused {
                    self.ready_anywhere();
                }
                self.job_get(id, now).await
            }

            async fn job_delete(&self, id: &str, now: Timestamp) -> Result<()> {
                let mut tx = self.begin().await?;
                lock_triggers_of(&mut tx, id).await?;
                Shared::delete_job(&mut tx, id, now).await?;
                tx.commit().await.map_err(db_err)
            }

            async fn job_set_paused(&self, id: &str, paused: bool, now: Timestamp) -> Result<Job> {
                let mut tx = self.begin().await?;
                lock_triggers_of(&mut tx, id).await?;
                Shared::set_paused(&mut tx, id, paused, now).await?;
                if !paused {
                    self.notify_ready(&mut tx).await?;
                }
                tx.commit().await.map_err(db_err)?;
                if !paused {
                    self.ready_anywhere();
                }
                self.job_get(id, now).await
            }

            async fn job_run_now(&self, id: &str, now: Timestamp) -> Result<Run> {
                let mut tx = self.begin().await?;
                // The row lock serialises this overlap decision with the schedulers'.
                let snap = Shared::job_snapshot(&mut tx, id, true).await?;
                let mut run = NewRun::untriggered(snap, now, false, true);
                let (pending, running) = Shared::place_untriggered(&mut tx, &mut run).await?;
                cancel_pending(&mut tx, &pending, us(now)).await?;
                Shared::request_cancel(&mut tx, &running).await?;
                runs::insert_all(&mut tx, std::slice::from_ref(&run)).await?;
                if run.state == RunState::Pending && !run.blocked {
                    self.notify_ready(&mut tx).await?;
                }
                let row = Shared::run_row(&mut tx, &run.id, false).await?;
                tx.commit().await.map_err(db_err)?;
                self.ready_anywhere();
                row.ok_or_else(|| StoreError::Internal("run vanished".into()))?.into_run()
            }

            async fn trigger_fire_due(&self, now: Timestamp, limit: u32, misfire_threshold: Duration) -> Result<FireReport> {
                triggers::fire_due(self, now, limit, misfire_threshold).await
            }

            async fn trigger_next_due(&self) -> Result<Option<Timestamp>> {
                self.reader().next_due().await
            }

            async fn run_get(&self, id: &str) -> Result<Run> {
                self.reader().run(id).await
            }

            async fn run_list(&self, f: &RunFilter) -> Result<Page<Run>> {
                use $crate::store::listing::{run_query, split_page};
                let mut q = run_query::<$db>(f)?;
                let mut rows: Vec<RunRow> = q.build_query_as().fetch_all(self.reader().pool).await.map_err(db_err)?;
                let next_cursor = split_page(&mut rows, f.limit, |r| (r.scheduled_for, r.id.as_str()));
                Ok(Page { items: rows.into_iter().map(RunRow::into_run).collect::<Result<_>>()?, next_cursor })
            }

            async fn run_cancel(&self, id: &str, now: Timestamp) -> Result<Run> {
                $crate::store::only_item(runs::cancel_many(self, &[id.to_string()], now).await)
            }

            async fn run_retry(&self, id: &str, now: Timestamp) -> Result<Run> {
                $crate::store::only_item(runs::retry_many(self, &[id.to_string()], now).await)
            }

            async fn run_attempts(&self, id: &str) -> Result<Vec<Attempt>> {
                self.reader().attempts(id).await
            }

            async fn run_cancel_many(&self, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
                runs::cancel_many(self, ids, now).await
            }

            async fn run_retry_many(&self, ids: &[String], now: Timestamp) -> Result<Vec<Result<Run>>> {
                runs::retry_many(self, ids, now).await
            }

            async fn run_claim(&self, p: &ClaimParams) -> Result<Vec<ClaimedRun>> {
                leases::claim(self, p).await
            }

            async fn run_heartbeat(
                &self,
                worker_id: &str,
                held: &[Lease],
                lease: Duration,
                now: Timestamp,
            ) -> Result<HeartbeatOutcome> {
                leases::heartbeat(self, worker_id, held, lease, now).await
            }

            async fn run_complete_many(&self, completions: Vec<Completion>, now: Timestamp) -> Result<Vec<Result<Run>>> {
                leases::complete_many(self, completions, now).await
            }

            async fn run_reap(&self, p: &ReapParams) -> Result<ReapReport> {
                leases::reap(self, p).await
            }

            async fn run_next_pending(&self, after: Timestamp) -> Result<Option<Timestamp>> {
                self.reader().next_pending(after).await
            }

            async fn run_prune(&self, before: Timestamp, limit: u32) -> Result<u64> {
                runs::prune(self, before, limit).await
            }

            async fn worker_register(
                &self,
                name: &str,
                handlers: &[String],
                capacity: u32,
                namespaces: Option<&[String]>,
                now: Timestamp,
            ) -> Result<Worker> {
                let mut w = self.one_write().await?;
                let scope = WorkerScope { handlers: handlers.to_vec(), namespaces: namespaces.map(<[String]>::to_vec) };
                let id = Shared::insert_worker(&mut w, name, capacity, &scope, now).await?;
                w.done().await?;
                self.worker_get(&id).await
            }

            async fn worker_get(&self, id: &str) -> Result<Worker> {
                self.fresh_reader().worker(id).await
            }

            async fn worker_list(&self) -> Result<Vec<Worker>> {
                self.reader().workers().await
            }

            async fn worker_deregister(&self, id: &str, now: Timestamp) -> Result<()> {
                let mut w = self.one_write().await?;
                Shared::drain_worker(&mut w, id, now).await?;
                w.done().await
            }

            async fn worker_forget_dead(&self, before: Timestamp, limit: u32) -> Result<u64> {
                let mut w = self.one_write().await?;
                let forgotten = Shared::forget_dead(&mut w, before, limit).await?;
                w.done().await?;
                Ok(forgotten)
            }

            async fn stats(&self, now: Timestamp) -> Result<Stats> {
                self.reader().stats(now).await
            }

            async fn stats_runs(&self, q: &RunStatsQuery) -> Result<Vec<RunBucket>> {
                use $crate::store::counts::{finished_query, started_query};
                let pool = self.reader().pool;
                let finished = finished_query::<$db>(q).build_query_as().fetch_all(pool).await.map_err(db_err)?;
                let started = started_query::<$db>(q).build_query_as().fetch_all(pool).await.map_err(db_err)?;
                Ok($crate::store::plan::run_buckets(q, finished, started))
            }

            async fn stats_handlers(&self, namespaces: Option<&[String]>, now: Timestamp) -> Result<Vec<HandlerQueue>> {
                use $crate::store::counts::handler_runs_query;
                let pool = self.reader().pool;
                let mut q = handler_runs_query::<$db>(<$db as Dialect>::is_false, namespaces, now);
                let runs = q.build_query_as().fetch_all(pool).await.map_err(db_err)?;
                let workers = sqlx::query_as(<$db as Dialect>::WORKER_HANDLERS).fetch_all(pool).await.map_err(db_err)?;
                Ok($crate::store::plan::handler_queues(runs, workers))
            }

            async fn limit_put(&self, key: &LimitKey, bounds: LimitBounds, now: Timestamp) -> Result<LimitDef> {
                let mut w = self.one_write().await?;
                let def = Shared::upsert_limit(&mut w, key, bounds, now).await?;
                w.done().await?;
                Ok(def)
            }

            async fn limit_defs(&self) -> Result<Vec<LimitDef>> {
                self.reader().limit_defs().await
            }

            async fn limit_delete(&self, key: &LimitKey) -> Result<()> {
                let mut w = self.one_write().await?;
                Shared::delete_limit(&mut w, key).await?;
                w.done().await
            }

            async fn limit_running(&self, keys: &[String]) -> Result<HashMap<String, u64>> {
                self.reader().limit_running(keys).await
            }

            async fn calendar_put(
                &self,
                calendar: &Calendar,
                exclude: &[serde_json::Value],
                now: Timestamp,
            ) -> Result<CalendarDef> {
                let mut tx = self.begin().await?;
                // Triggers first (the lock order).
                let triggers = Shared::triggers_naming(&mut tx, &calendar.name, now).await?;
                let row = Shared::upsert_calendar(&mut tx, calendar, exclude, now).await?;
                let moved = Shared::moved_triggers(&mut tx, &triggers, now).await?;
                calendars::move_triggers(&mut tx, moved).await?;
                tx.commit().await.map_err(db_err)?;
                row.into_def()
            }

            async fn calendar_get(&self, name: &str) -> Result<CalendarDef> {
                self.reader().calendar(name).await
            }

            async fn calendar_list(&self) -> Result<Vec<CalendarDef>> {
                self.reader().calendars().await
            }

            async fn calendar_delete(&self, name: &str) -> Result<()> {
                let mut tx = self.begin().await?;
                Shared::delete_calendar(&mut tx, name).await?;
                tx.commit().await.map_err(db_err)
            }

            async fn job_backfill(&self, id: &str, req: &BackfillRequest, now: Timestamp) -> Result<BackfillOutcome> {
                let mut tx = self.begin().await?;
                let (actions, paused, due) = Shared::backfill_plan(&mut tx, id, req, now).await?;
                let created = runs::insert_all(&mut tx, &actions.inserts).await?;
                cancel_pending(&mut tx, &actions.cancel_pending, us(now)).await?;
                Shared::request_cancel(&mut tx, &actions.cancel_running).await?;
                // A paused job's runs are held: nothing to claim yet.
                if !paused && actions.inserts.iter().any(|r| r.state == RunState::Pending && !r.blocked) {
                    self.notify_ready(&mut tx).await?;
                }
                tx.commit().await.map_err(db_err)?;
                self.ready_anywhere();
                Ok(BackfillOutcome { created, existing: due - created })
            }
        }
    };
}
use store_by_noun;

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store a URL names: `sqlite://path` (created if missing) or `postgres://…`.
pub async fn open(url: &str) -> Result<SharedStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(postgres::PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Internal(format!("unsupported database URL {url:?}: use sqlite://path or postgres://…")))
    }
}
