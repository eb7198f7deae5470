//! The SQLite store: one file, WAL, one writer connection plus a pool of readers.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so writers (even in other processes on
//! the same file) queue on the busy timeout instead of failing on a lock upgrade. SQLite has no
//! `SKIP LOCKED`; a single writer makes claims serial, which is what `SKIP LOCKED` buys on
//! PostgreSQL.

use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::plan::{
    holds, lease_of, operator_retry, settle_row, streak_write, submission_vs_existing, JobStreak, Taken, NOTE_THEN,
};
use super::reads::Reader;
use super::rows::{dur_us, fresh_job, trigger_spec_json, ts, us, JobRow, RunRow, WorkerScope, RUN_COLUMNS};
use super::writes::{Dialect, OneWrite, Writes};
use super::*;
use crate::attempt::{attempt_outcome, Ended};
use crate::domain::{new_id, Lease, Overlap, Trigger};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::str::FromStr;

mod calendars;
mod jobs;
mod leases;
mod limits;
mod runs;
mod triggers;
mod workers;

use runs::{cancel_pending, insert_runs, INSERT_CHUNK};
use triggers::{insert_triggers, new_triggers};
use workers::touch_worker;

type Tx = Transaction<'static, Sqlite>;

/// The statements written once for both dialects.
type Shared = Writes<Sqlite>;

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

    /// Starts a write transaction, in a task of its own: sqlx's SQLite `begin_with` runs
    /// `BEGIN` and then awaits once more before it hands out the transaction, and a caller dropped
    /// in between (a claim whose caller timed out, a client gone) left the one write connection
    /// inside a transaction nobody could end, so every later write failed. A spawned begin
    /// always completes; when its caller is gone, the transaction is dropped, and so rolled back,
    /// in the task.
    async fn begin(&self) -> Result<Tx> {
        let write = self.write.clone();
        tokio::spawn(async move { write.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(|e| StoreError::Internal(format!("starting a write transaction: {e}")))?
            .map_err(db_err)
    }

    /// Other nodes' "runs ready" notice on PostgreSQL; SQLite serves one node, whose in-process
    /// signals cover every change.
    async fn notify_ready(&self, _tx: &mut Tx) -> Result<()> {
        Ok(())
    }

    /// PostgreSQL moves its claim cursors back; SQLite's claims always read from the head (its
    /// indexes hold no entries of finished runs).
    fn ready_anywhere(&self) {}

    /// Where a write of one statement runs: a transaction, queued behind the other writers.
    async fn one_write(&self) -> Result<OneWrite<Sqlite>> {
        Ok(OneWrite::Tx(self.begin().await?))
    }

    /// The shared reads, on the reader pool.
    fn reader(&self) -> Reader<'_, Sqlite> {
        Reader { pool: &self.read }
    }

    /// The shared reads on the writer, for a read that must see the writer's last commit at once
    /// (a worker just registered).
    fn fresh_reader(&self) -> Reader<'_, Sqlite> {
        Reader { pool: &self.write }
    }
}

/// The lock order's first step on PostgreSQL; SQLite's one writer needs no row locks.
async fn lock_triggers_of(_tx: &mut Tx, _job_id: &str) -> Result<()> {
    Ok(())
}

/// SQLite's side of the SQL written once (`store::writes`, `store::reads`).
impl Dialect for Sqlite {
    fn err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn changed(done: Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    type List<'a> = String;
    const ROW_LOCKS: bool = false;
    const WORKER_HANDLERS: &'static str =
        "SELECT h.value, COUNT(*) FROM workers w, json_each(w.handlers) h WHERE w.state = 'active' GROUP BY h.value";

    fn is_false(column: &str) -> String {
        format!("{column} = 0")
    }

    fn list(items: &[String]) -> String {
        serde_json::to_string(items).expect("strings serialize")
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} IN (SELECT value FROM json_each({param}))")
    }

    fn names_calendar(param: &str) -> String {
        format!("EXISTS (SELECT 1 FROM json_each(triggers.spec, '$.calendars') WHERE value = {param})")
    }
}

store_by_noun!(SqliteStore, Sqlite {
    fn capabilities(&self) -> Capabilities {
        Capabilities { multi_node: false }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(db_err)?;
        Ok(())
    }
});
