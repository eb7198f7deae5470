//! The PostgreSQL store: any number of stateless nodes share one database, with no leader.
//!
//! Same tables and semantics as [`SqliteStore`](super::sqlite::SqliteStore); what differs is
//! how concurrent nodes are kept apart:
//! * claims, due triggers, expired leases and prunes are picked with `FOR UPDATE SKIP LOCKED`,
//!   so nodes never wait on each other's picks;
//! * overlap decisions are serialised per job by locking the job's row (`buffer_one`,
//!   `skip`, `cancel_other` jobs only), and so are settlements that read the job (a retry
//!   checks `paused`; a `buffer_one` finish releases the waiting run);
//! * to rule out deadlocks, every transaction takes row locks in one order: triggers, then jobs
//!   (sorted by id), then runs (sorted by id); a transaction that already holds run locks only
//!   takes job locks with `SKIP LOCKED`;
//! * hot paths are batched into a handful of statements (`UNNEST` arrays), whatever the batch
//!   size: submissions, fires, completions and heartbeats.
//!
//! Tests isolate themselves in a schema of their own: [`PostgresStore::connect_with_schema`], or
//! `?schema=NAME` in the URL given to [`PostgresStore::connect`].

use super::cursor::{ClaimCursors, ClaimRead, ReadyKey};
use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::plan::{
    holds, lease_of, operator_retry, settle_row, streak_write, submission_vs_existing, Conflict, JobStreak, Taken,
    NOTE_THEN,
};
use super::reads::Reader;
use super::rows::{dur_us, fresh_job, trigger_spec_json, ts, us, JobRow, RunRow, WorkerScope, JOB_SELECT, RUN_COLUMNS};
use super::writes::{Dialect, OneWrite, Writes};
use super::*;
use crate::attempt::{attempt_outcome, Ended};
use crate::domain::{new_id, Lease, Overlap, Trigger};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

mod calendars;
mod jobs;
mod leases;
mod limits;
mod listener;
mod runs;
mod triggers;
mod workers;

pub use listener::RunsReadyListener;
use listener::READY_CHANNEL;
use runs::{cancel_pending, insert_runs};
use triggers::insert_triggers;
use workers::touch_worker;

type Tx = Transaction<'static, Postgres>;

/// The statements written once for both dialects.
type Shared = Writes<Postgres>;

/// Connections per node.
const POOL_SIZE: u32 = 16;

/// Marks [`StoreError::Unavailable`] messages of transient transaction failures (deadlock,
/// serialization failure) that a caller may simply retry.
const RETRYABLE: &str = "transient conflict with a concurrent transaction";

/// The PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    /// Where this node's claims start reading the ready order (see [`super::cursor`]).
    cursors: std::sync::Arc<ClaimCursors>,
}

/// Maps driver errors to domain errors (the one place that knows sqlx's error kinds).
fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(ref d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                // Deadlock detected, serialization failure: nothing is committed, try again.
                "40P01" | "40001" => StoreError::Unavailable(format!("{RETRYABLE}: {e}")),
                // Connection exceptions, insufficient resources, shutdown, lock timeouts.
                c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") || c == "55P03" => {
                    StoreError::Unavailable(e.to_string())
                }
                // Unique violation: a concurrent writer took the name or key first.
                "23505" => match d.constraint() {
                    Some("jobs_name") => StoreError::Conflict {
                        code: "name_conflict",
                        message: "name: is taken in this namespace by another job".into(),
                    },
                    Some("jobs_idempotency_key") => StoreError::Conflict {
                        code: "idempotency_conflict",
                        message: "idempotency_key: was already used for a different job definition".into(),
                    },
                    _ => StoreError::Internal(e.to_string()),
                },
                // Text PostgreSQL cannot store (a NUL character).
                "22021" | "22P05" => StoreError::Invalid(format!("value cannot be stored: {}", d.message())),
                _ => StoreError::Internal(e.to_string()),
            }
        }
        other => StoreError::Internal(other.to_string()),
    }
}

fn is_retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.starts_with(RETRYABLE))
}

fn migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(e) => db_err(e),
        other => StoreError::Internal(format!("migration failed: {other}")),
    }
}

/// Schema names are used unquoted in the connection's `search_path`: keep them plain.
fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// Takes `schema=NAME` out of a URL's query (sqlx does not know that parameter).
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else { return (url.to_string(), None) };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("schema=") {
            Some(v) => {
                schema = Some(v.to_string());
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    (url, schema)
}

impl PostgresStore {
    /// Connects to `postgres://…` and migrates. A `schema=NAME` query parameter works like
    /// [`PostgresStore::connect_with_schema`].
    pub async fn connect(url: &str) -> Result<Self> {
        let (url, schema) = split_schema(url);
        Self::connect_inner(&url, schema).await
    }

    /// Connects with every pooled connection's `search_path` set to `schema` (created if
    /// missing), and migrates inside it (the migrations table included), so several sundial
    /// installations, or tests, share one database without seeing each other. `schema` is
    /// lower-case letters, digits and `_`.
    pub async fn connect_with_schema(url: &str, schema: &str) -> Result<Self> {
        Self::connect_inner(url, Some(schema.to_string())).await
    }

    async fn connect_inner(url: &str, schema: Option<String>) -> Result<Self> {
        // Every statement is planned for its own arguments and the tables as they are now. A
        // cached generic plan is made once, from the statistics of the moment: a node started
        // on empty tables would keep sequential scans that grow with history until the next
        // ANALYZE (with autovacuum off, never). Planning these small statements costs little.
        let mut opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Internal(format!("bad postgres URL: {e}")))?
            .application_name("sundial")
            .options([("plan_cache_mode", "force_custom_plan")]);
        if let Some(s) = &schema {
            if !valid_schema(s) {
                return Err(StoreError::Invalid(format!(
                    "schema: {s:?} must be lower-case letters, digits and '_', starting with a letter or '_'"
                )));
            }
            // A startup parameter: set on every connection before its first statement.
            opts = opts.options([("search_path", s.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .idle_timeout(std::time::Duration::from_secs(60))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        if let Some(s) = &schema {
            if let Err(e) = sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}")).execute(&pool).await {
                // Two processes creating it at once: the loser sees a unique violation.
                let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(s)
                    .fetch_one(&pool)
                    .await
                    .map_err(db_err)?;
                if !exists {
                    return Err(db_err(e));
                }
            }
        }
        sqlx::migrate!("src/store/postgres/migrations").run(&pool).await.map_err(migrate_err)?;
        Ok(Self { pool, schema, cursors: Default::default() })
    }

    /// Closes every pooled connection (waiting for those in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The schema this store lives in, when it was given one.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Listens for "runs may be ready" notices from every node sharing this database (and
    /// schema): sent when a commit makes pending runs due (fires, submissions, manual runs,
    /// resumes), so idle claimers can look at once instead of waiting out a poll interval.
    pub async fn listen_runs_ready(&self) -> Result<RunsReadyListener> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await.map_err(db_err)?;
        listener.listen(READY_CHANNEL).await.map_err(db_err)?;
        Ok(RunsReadyListener {
            listener,
            schema: self.schema.clone().unwrap_or_default(),
            #[cfg(feature = "testing")]
            skipped: Vec::new(),
        })
    }

    /// Queues a [`READY_CHANNEL`] notice, delivered when (and only if) `tx` commits; PostgreSQL
    /// folds repeats within one transaction into one.
    async fn notify_ready(&self, tx: &mut Tx) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(READY_CHANNEL)
            .bind(self.schema.as_deref().unwrap_or_default())
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn begin(&self) -> Result<Tx> {
        self.pool.begin().await.map_err(db_err)
    }

    /// After a commit that made runs ready wherever they sort (a resume, a manual run, a
    /// backfill): this node's claims read from the head next.
    fn ready_anywhere(&self) {
        self.cursors.invalidate();
    }

    /// The shared reads.
    fn reader(&self) -> Reader<'_, Postgres> {
        Reader { pool: &self.pool }
    }

    /// The shared reads that must see the last commit at once: one pool serves both.
    fn fresh_reader(&self) -> Reader<'_, Postgres> {
        self.reader()
    }

    /// Where a write of one statement runs: a pooled connection (it commits by itself).
    async fn one_write(&self) -> Result<OneWrite<Postgres>> {
        Ok(OneWrite::Pooled(self.pool.acquire().await.map_err(db_err)?))
    }
}

/// Locks job rows (sorted by id, so concurrent lockers queue instead of deadlocking).
async fn lock_jobs(tx: &mut Tx, job_ids: &[String]) -> Result<()> {
    lock_rows(tx, "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE", job_ids).await
}

/// Locks the triggers of jobs (before their rows: the lock order is triggers, jobs, runs).
async fn lock_triggers_of_jobs(tx: &mut Tx, job_ids: &[String]) -> Result<()> {
    lock_rows(tx, "SELECT id FROM triggers WHERE job_id = ANY($1) ORDER BY id FOR UPDATE", job_ids).await
}

/// Locks a job's triggers (before its row: the lock order is triggers, jobs, runs).
async fn lock_triggers_of(tx: &mut Tx, job_id: &str) -> Result<()> {
    lock_triggers_of_jobs(tx, &[job_id.to_string()]).await
}

/// Runs a locking read of the rows `sql` picks by the ids bound at `$1` (none: nothing to lock).
async fn lock_rows(tx: &mut Tx, sql: &str, ids: &[String]) -> Result<()> {
    if !ids.is_empty() {
        sqlx::query(sql).bind(ids).execute(&mut **tx).await.map_err(db_err)?;
    }
    Ok(())
}

fn sorted_unique(mut v: Vec<String>) -> Vec<String> {
    v.sort_unstable();
    v.dedup();
    v
}

/// PostgreSQL's side of the SQL written once (`store::writes`, `store::reads`).
impl Dialect for Postgres {
    fn err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn changed(done: Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    type List<'a> = &'a [String];
    const ROW_LOCKS: bool = true;
    const WORKER_HANDLERS: &'static str = "SELECT h, COUNT(*) FROM workers w, \
         json_array_elements_text(w.handlers::json) AS h WHERE w.state = 'active' GROUP BY h";

    fn is_false(column: &str) -> String {
        format!("NOT {column}")
    }

    fn list(items: &[String]) -> &[String] {
        items
    }

    fn in_list(column: &str, param: &str) -> String {
        format!("{column} = ANY({param})")
    }

    fn names_calendar(param: &str) -> String {
        format!("spec::jsonb -> 'calendars' ? {param}")
    }
}

store_by_noun!(PostgresStore, Postgres {
    async fn wakeups(&self) -> Result<Option<Box<dyn Wakeups>>> {
        Ok(Some(Box::new(self.listen_runs_ready().await?)))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { multi_node: true }
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_taken_out_of_the_url() {
        assert_eq!(split_schema("postgres://h/db"), ("postgres://h/db".into(), None));
        assert_eq!(split_schema("postgres://h/db?schema=s1"), ("postgres://h/db".into(), Some("s1".into())));
        assert_eq!(
            split_schema("postgres://h/db?sslmode=disable&schema=s1&application_name=x"),
            ("postgres://h/db?sslmode=disable&application_name=x".into(), Some("s1".into()))
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(valid_schema("t_0192abc"));
        assert!(valid_schema("_x"));
        assert!(!valid_schema("1x"));
        assert!(!valid_schema("a b"));
        assert!(!valid_schema("A"));
        assert!(!valid_schema("a;drop"));
        assert!(!valid_schema(""));
    }
}
