//! The SQLite store: one file, WAL, one writer connection plus a pool of readers.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so writers (even in other processes on
//! the same file) queue on the busy timeout instead of failing on a lock upgrade. SQLite has no
//! `SKIP LOCKED`; a single writer makes claims serial, which is what `SKIP LOCKED` buys on
//! PostgreSQL.

use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::plan::{
    holds, lease_of, operator_retry, settle_row, submission_vs_existing, update_conflict, StatCounts, Taken, NOTE_THEN,
};
use super::rows::{
    dur_us, fresh_job, trigger_spec_json, ts, us, AttemptRow, JobRow, RunRow, TriggerRow, WorkerRow, ATTEMPT_COLUMNS,
    JOB_SELECT, RUN_COLUMNS, TRIGGER_COLUMNS, WORKER_SELECT,
};
use super::*;
use crate::attempt::{attempt_outcome, Ended};
use crate::domain::{new_id, Lease, Overlap, Trigger};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::str::FromStr;

mod jobs;
mod leases;
mod runs;
mod triggers;
mod workers;

use runs::{
    active_runs, cancel_pending, insert_runs, insert_untriggered, request_cancel, run_row, unblock_next, INSERT_CHUNK,
};
use triggers::{insert_triggers, new_triggers};
use workers::touch_worker;

type Tx = Transaction<'static, Sqlite>;

/// The SQLite-backed [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

/// Maps driver errors to domain errors (the one place that knows sqlx's error kinds).
fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(ref d) if d.message().contains("database is locked") => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `sqlite://path`, and migrates it.
    pub async fn open(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad sqlite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before the API answers (guarantee 1), power loss included.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(false)
            .pragma("temp_store", "memory")
            .pragma("cache_size", "-65536");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect_with(opts.clone())
            .await
            .map_err(db_err)?;
        sqlx::migrate!("src/store/sqlite/migrations")
            .run(&write)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))?;
        let read =
            SqlitePoolOptions::new().max_connections(4).connect_with(opts.read_only(true)).await.map_err(db_err)?;
        Ok(Self { write, read })
    }

    async fn begin(&self) -> Result<Tx> {
        self.write.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)
    }

    async fn load_triggers(&self, job_ids: &[String]) -> Result<HashMap<String, Vec<Trigger>>> {
        let mut out: HashMap<String, Vec<Trigger>> = HashMap::new();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let ids = serde_json::to_string(job_ids).expect("ids serialize");
        let rows: Vec<TriggerRow> = sqlx::query_as(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE job_id IN (SELECT value FROM json_each(?)) \
             ORDER BY job_id, position"
        ))
        .bind(ids)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        for r in rows {
            out.entry(r.job_id.clone()).or_default().push(r.into_trigger()?);
        }
        Ok(out)
    }

    async fn jobs_from_rows(&self, rows: Vec<JobRow>, now: Timestamp) -> Result<Vec<Job>> {
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let mut triggers = self.load_triggers(&ids).await?;
        rows.into_iter()
            .map(|r| {
                let t = triggers.remove(&r.id).unwrap_or_default();
                r.into_job(t, now)
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { multi_node: false }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(db_err)?;
        Ok(())
    }

    async fn job_create_many(&self, jobs: Vec<JobCreate>, now: Timestamp) -> Result<Vec<Result<JobCreated>>> {
        jobs::create_many(self, jobs, now).await
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> Result<Job> {
        jobs::get(self, id, now).await
    }

    async fn job_list(&self, f: &JobFilter, now: Timestamp) -> Result<Page<Job>> {
        jobs::list(self, f, now).await
    }

    async fn job_update(&self, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job> {
        jobs::update(self, id, spec, now).await
    }

    async fn job_delete(&self, id: &str, now: Timestamp) -> Result<()> {
        jobs::delete(self, id, now).await
    }

    async fn job_set_paused(&self, id: &str, paused: bool, now: Timestamp) -> Result<Job> {
        jobs::set_paused(self, id, paused, now).await
    }

    async fn job_run_now(&self, id: &str, now: Timestamp) -> Result<Run> {
        jobs::run_now(self, id, now).await
    }

    async fn trigger_fire_due(&self, now: Timestamp, limit: u32, misfire_threshold: Duration) -> Result<FireReport> {
        triggers::fire_due(self, now, limit, misfire_threshold).await
    }

    async fn trigger_next_due(&self) -> Result<Option<Timestamp>> {
        triggers::next_due(self).await
    }

    async fn run_get(&self, id: &str) -> Result<Run> {
        runs::get(self, id).await
    }

    async fn run_list(&self, f: &RunFilter) -> Result<Page<Run>> {
        runs::list(self, f).await
    }

    async fn run_cancel(&self, id: &str, now: Timestamp) -> Result<Run> {
        runs::cancel(self, id, now).await
    }

    async fn run_retry(&self, id: &str, now: Timestamp) -> Result<Run> {
        runs::retry(self, id, now).await
    }

    async fn run_attempts(&self, id: &str) -> Result<Vec<Attempt>> {
        runs::attempts(self, id).await
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

    async fn run_next_pending(&self) -> Result<Option<Timestamp>> {
        runs::next_pending(self).await
    }

    async fn run_prune(&self, before: Timestamp, limit: u32) -> Result<u64> {
        runs::prune(self, before, limit).await
    }

    async fn worker_register(&self, name: &str, handlers: &[String], capacity: u32, now: Timestamp) -> Result<Worker> {
        workers::register(self, name, handlers, capacity, now).await
    }

    async fn worker_get(&self, id: &str) -> Result<Worker> {
        workers::get(self, id).await
    }

    async fn worker_list(&self) -> Result<Vec<Worker>> {
        workers::list(self).await
    }

    async fn worker_deregister(&self, id: &str, now: Timestamp) -> Result<()> {
        workers::deregister(self, id, now).await
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats> {
        runs::stats(self, now).await
    }
}
