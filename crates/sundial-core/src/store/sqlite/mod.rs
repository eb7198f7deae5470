//! The SQLite store: one file, WAL, one writer connection plus a pool of readers.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so writers (even in other processes on
//! the same file) queue on the busy timeout instead of failing on a lock upgrade. SQLite has no
//! `SKIP LOCKED`; a single writer makes claims serial, which is what `SKIP LOCKED` buys on
//! PostgreSQL.

use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::plan::{
    holds, lease_of, operator_retry, settle_row, streak_write, submission_vs_existing, update_conflict, JobStreak,
    Taken, NOTE_THEN,
};
use super::reads::Reader;
use super::rows::{
    dur_us, fresh_job, jobs_with_triggers, trigger_spec_json, ts, us, AttemptRow, JobRow, RunRow, TriggerRow,
    WorkerScope, ATTEMPT_COLUMNS, RUN_COLUMNS, TRIGGER_COLUMNS,
};
use super::*;
use crate::attempt::{attempt_outcome, Ended};
use crate::domain::{new_id, Lease, Overlap, Trigger};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::str::FromStr;

mod calendars;
mod jobs;
mod leases;
mod limits;
mod runs;
mod stats;
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

    /// The shared reads, on `pool` (the reader pool, or the writer where a read must see the
    /// writer's last commit at once).
    fn reader<'a>(&'a self, pool: &'a SqlitePool) -> Reader<'a, Sqlite> {
        Reader { pool, err: db_err, param1: "?", is_false: |c| format!("{c} = 0") }
    }

    /// Jobs from their rows, with their triggers.
    async fn jobs_from_rows(&self, rows: Vec<JobRow>, now: Timestamp) -> Result<Vec<Job>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE job_id IN (SELECT value FROM json_each(?)) \
             ORDER BY job_id, position"
        ))
        .bind(serde_json::to_string(&ids).expect("ids serialize"))
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?;
        jobs_with_triggers(rows, triggers, now)
    }
}

store_by_noun!(SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities { multi_node: false }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await.map_err(db_err)?;
        Ok(())
    }
});
