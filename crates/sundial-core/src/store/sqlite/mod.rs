//! The SQLite store: one file, WAL, one writer connection plus a pool of readers.
//!
//! Every write transaction starts with `BEGIN IMMEDIATE`, so writers (even in other processes on
//! the same file) queue on the busy timeout instead of failing on a lock upgrade. SQLite has no
//! `SKIP LOCKED`; a single writer makes claims serial, which is what `SKIP LOCKED` buys on
//! PostgreSQL.

use super::fire::{fire_actions, JobSnapshot, NewRun, JOB_SNAPSHOT_COLUMNS};
use super::rows::{
    dur_us, fresh_job, trigger_spec_json, ts, us, JobRow, RunRow, TriggerRow, WorkerRow, JOB_SELECT, RUN_COLUMNS,
    TRIGGER_COLUMNS, WORKER_SELECT,
};
use super::*;
use crate::attempt::{settle, AttemptInfo, Ended};
use crate::domain::{new_id, Overlap, Trigger};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Sqlite, SqlitePool, Transaction};
use std::collections::HashMap;
use std::str::FromStr;

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

// ---------------------------------------------------------------------------------------------
// Transaction-scoped helpers shared by several trait methods.

/// Rows per multi-row INSERT: well under SQLite's 32,766 bound parameters at 21 columns.
const INSERT_CHUNK: usize = 1000;

/// Inserts runs in multi-row statements; a run whose `(trigger_id, fire_time)` exists is left
/// out (guarantee 2). Returns how many were inserted.
async fn insert_runs(tx: &mut Tx, runs: &[&NewRun]) -> Result<u64> {
    let mut inserted = 0;
    for chunk in runs.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO runs (id, job_id, trigger_id, fire_time, namespace, handler, payload, priority, timeout_us, \
             max_attempts, initial_delay_us, max_delay_us, overlap, scheduled_for, state, reason, finished_at, manual, \
             held, blocked, created_at) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.id.clone())
                .push_bind(r.job.id.clone())
                .push_bind(r.trigger_id.clone())
                .push_bind(r.fire_time)
                .push_bind(r.job.namespace.clone())
                .push_bind(r.job.handler.clone())
                .push_bind(r.job.payload.clone())
                .push_bind(r.job.priority)
                .push_bind(r.job.timeout_us)
                .push_bind(r.job.max_attempts)
                .push_bind(r.job.initial_delay_us)
                .push_bind(r.job.max_delay_us)
                .push_bind(r.job.overlap.clone())
                .push_bind(r.scheduled_for)
                .push_bind(r.state.as_str())
                .push_bind(r.reason.clone())
                .push_bind(r.finished_at())
                .push_bind(r.manual)
                .push_bind(r.held)
                .push_bind(r.blocked)
                .push_bind(r.created_at);
        });
        q.push(" ON CONFLICT (trigger_id, fire_time) DO NOTHING");
        inserted += q.build().execute(&mut **tx).await.map_err(db_err)?.rows_affected();
    }
    Ok(inserted)
}

async fn insert_run(tx: &mut Tx, r: &NewRun) -> Result<bool> {
    Ok(insert_runs(tx, &[r]).await? == 1)
}

async fn active_runs(tx: &mut Tx, job_id: &str) -> Result<ActiveRuns> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT id, state, blocked FROM runs WHERE job_id = ? AND state IN ('pending', 'running') \
         ORDER BY scheduled_for",
    )
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_err)?;
    let mut a = ActiveRuns::default();
    for (id, state, blocked) in rows {
        match (state.as_str(), blocked) {
            ("running", _) => a.running.push(id),
            (_, true) => a.blocked.push(id),
            _ => a.pending.push(id),
        }
    }
    Ok(a)
}

async fn cancel_pending(tx: &mut Tx, run_id: &str, reason: &str, now: i64) -> Result<bool> {
    let done = sqlx::query(
        "UPDATE runs SET state = 'cancelled', reason = ?, finished_at = ? WHERE id = ? AND state = 'pending'",
    )
    .bind(reason)
    .bind(now)
    .bind(run_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected() == 1)
}

async fn request_cancel(tx: &mut Tx, run_id: &str) -> Result<()> {
    sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = ? AND state = 'running'")
        .bind(run_id)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

/// `buffer_one`: when the job has nothing running or claimable left, its waiting run may go.
async fn unblock_next(tx: &mut Tx, job_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE runs SET blocked = 0 WHERE id = (SELECT id FROM runs WHERE job_id = ?1 AND state = 'pending' \
         AND blocked = 1 ORDER BY scheduled_for LIMIT 1) AND NOT EXISTS (SELECT 1 FROM runs WHERE job_id = ?1 \
         AND (state = 'running' OR (state = 'pending' AND blocked = 0)))",
    )
    .bind(job_id)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    Ok(())
}

/// Inserts a run that is not from a trigger, applying the job's overlap policy.
async fn insert_untriggered(tx: &mut Tx, mut run: NewRun, now: i64) -> Result<NewRun> {
    if run.job.overlap() != Overlap::Allow {
        let mut active = active_runs(tx, &run.job.id).await?;
        match decide(run.job.overlap(), &mut active, &run.id) {
            Decision::Pending { blocked } => run.blocked = blocked,
            Decision::Skipped(why) => {
                run.state = RunState::Skipped;
                run.reason = Some(why);
            }
            Decision::Supersede { cancel_pending: p, cancel_running } => {
                for id in p {
                    cancel_pending(tx, &id, &superseded_reason(&run.id), now).await?;
                }
                for id in cancel_running {
                    request_cancel(tx, &id).await?;
                }
            }
        }
    }
    insert_run(tx, &run).await?;
    Ok(run)
}

/// The triggers of a new definition, with their first due times (not yet stored).
fn new_triggers(spec: &JobSpec, now: Timestamp) -> Vec<Trigger> {
    spec.triggers
        .iter()
        .map(|t| Trigger { id: new_id(), spec: t.clone(), next_fire_at: crate::schedule::first_fire(t, now), fires: 0 })
        .collect()
}

/// Stores triggers as `(job_id, paused, trigger)` rows in multi-row statements.
async fn insert_triggers(tx: &mut Tx, rows: &[(&str, bool, usize, &Trigger)]) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO triggers (id, job_id, position, spec, next_fire_at, fires, paused) ",
        );
        q.push_values(chunk, |mut b, (job_id, paused, pos, t)| {
            b.push_bind(t.id.clone())
                .push_bind(job_id.to_string())
                .push_bind(*pos as i64)
                .push_bind(trigger_spec_json(&t.spec))
                .push_bind(t.next_fire_at.map(us))
                .push_bind(0i64)
                .push_bind(*paused);
        });
        q.build().execute(&mut **tx).await.map_err(db_err)?;
    }
    Ok(())
}

async fn find_existing(tx: &mut Tx, namespace: &str, column: &str, value: &str) -> Result<Option<(String, String)>> {
    sqlx::query_as(&format!("SELECT id, fingerprint FROM jobs WHERE namespace = ? AND {column} = ?"))
        .bind(namespace)
        .bind(value)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// A new job staged for the batch's multi-row inserts.
struct StagedJob {
    job: Job,
    snap: JobSnapshot,
    key: Option<String>,
}

/// What one submission of a batch turned out to be.
enum Decided {
    /// Stored as `staged[i]`.
    New(usize),
    /// A replay of a job committed earlier.
    Existing(String),
    /// A replay of `staged[i]`, submitted earlier in this same batch.
    SameAsStaged(usize),
    /// Refused (conflict); the rest of the batch goes on.
    Refused(StoreError),
}

/// Decides one submission: a replay, a conflict, or a new job to stage. Earlier items of the
/// same batch count as taken, exactly as committed jobs do.
async fn decide_one(
    tx: &mut Tx,
    c: JobCreate,
    now: Timestamp,
    staged: &mut Vec<StagedJob>,
    taken: &mut HashMap<(String, String, String), usize>,
) -> Result<Decided> {
    let spec = c.spec;
    let fingerprint = spec.fingerprint();
    let key = spec.idempotency_key.clone().or(c.derived_idempotency_key);
    let lookups = [("idempotency_key", key.clone()), ("name", spec.name.clone())];
    for (column, value) in &lookups {
        let Some(value) = value else { continue };
        let existing = match taken.get(&(column.to_string(), spec.namespace.clone(), value.clone())) {
            Some(&i) => Some((None, Some(i), staged[i].job.fingerprint.clone())),
            None => find_existing(tx, &spec.namespace, column, value).await?.map(|(id, fp)| (Some(id), None, fp)),
        };
        let Some((id, staged_index, fp)) = existing else { continue };
        // A derived key (e.g. Kafka offsets) names the same message again: always a replay.
        let derived = *column == "idempotency_key" && spec.idempotency_key.is_none();
        if fp == fingerprint || derived {
            return Ok(match (id, staged_index) {
                (Some(id), _) => Decided::Existing(id),
                (None, Some(i)) => Decided::SameAsStaged(i),
                (None, None) => unreachable!("an existing job has an id or a batch index"),
            });
        }
        return Ok(Decided::Refused(if *column == "idempotency_key" {
            StoreError::Conflict {
                code: "idempotency_conflict",
                message: format!("idempotency_key: {value:?} was already used for a different job definition"),
            }
        } else {
            StoreError::Conflict {
                code: "name_conflict",
                message: format!(
                    "name: {value:?} is taken in namespace {:?} by a job with a different definition",
                    spec.namespace
                ),
            }
        }));
    }
    let id = new_id();
    let name = spec.name.clone().unwrap_or_else(|| id.clone());
    let snap = JobSnapshot::from_spec(&id, &spec);
    let mut spec = spec;
    spec.idempotency_key = key.clone();
    let job = fresh_job(&id, &name, &spec, new_triggers(&spec, now), now);
    let index = staged.len();
    for (column, value) in lookups {
        if let Some(v) = value {
            taken.insert((column.to_string(), spec.namespace.clone(), v), index);
        }
    }
    staged.push(StagedJob { job, snap, key });
    Ok(Decided::New(index))
}

/// Stores the staged jobs, their triggers and their due-now runs in multi-row statements.
async fn insert_staged(tx: &mut Tx, staged: &[StagedJob], now: Timestamp) -> Result<()> {
    for chunk in staged.chunks(INSERT_CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO jobs (id, namespace, name, handler, payload, priority, max_attempts, initial_delay_us, \
             max_delay_us, timeout_us, overlap, paused, idempotency_key, fingerprint, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut b, s| {
            b.push_bind(s.job.id.clone())
                .push_bind(s.job.namespace.clone())
                .push_bind(s.job.name.clone())
                .push_bind(s.snap.handler.clone())
                .push_bind(s.snap.payload.clone())
                .push_bind(s.snap.priority)
                .push_bind(s.snap.max_attempts)
                .push_bind(s.snap.initial_delay_us)
                .push_bind(s.snap.max_delay_us)
                .push_bind(s.snap.timeout_us)
                .push_bind(s.snap.overlap.clone())
                .push_bind(s.job.paused)
                .push_bind(s.key.clone())
                .push_bind(s.job.fingerprint.clone())
                .push_bind(us(now))
                .push_bind(us(now));
        });
        q.build().execute(&mut **tx).await.map_err(db_err)?;
    }
    let triggers: Vec<(&str, bool, usize, &Trigger)> = staged
        .iter()
        .flat_map(|s| s.job.triggers.iter().enumerate().map(|(pos, t)| (s.job.id.as_str(), s.job.paused, pos, t)))
        .collect();
    insert_triggers(tx, &triggers).await?;
    // No trigger: one run, due now (held until resume when created paused).
    let runs: Vec<NewRun> = staged
        .iter()
        .filter(|s| s.job.triggers.is_empty())
        .map(|s| NewRun::untriggered(s.snap.clone(), now, s.job.paused, false))
        .collect();
    insert_runs(tx, &runs.iter().collect::<Vec<_>>()).await?;
    Ok(())
}

/// Applies a settlement to a running run, fenced by `(worker_id, attempt)`.
async fn apply_settlement(
    tx: &mut Tx,
    row: &RunRow,
    ended: Ended,
    output: Option<&serde_json::Value>,
    error: Option<&str>,
    now: Timestamp,
) -> Result<Option<RunRow>> {
    let info = AttemptInfo { attempt: row.attempt as u32, retry: row.retry(), cancel_requested: row.cancel_requested };
    let s = settle(info, ended, error, now);
    let finished = s.state.is_finished().then_some(us(now));
    let updated: Option<RunRow> = sqlx::query_as(&format!(
        "UPDATE runs SET state = ?, scheduled_for = COALESCE(?, scheduled_for), finished_at = ?, ended_at = ?, \
         output = COALESCE(?, output), error = COALESCE(?, error), reason = ?, lease_expires_at = NULL, \
         held = (? = 'pending' AND manual = 0 AND EXISTS (SELECT 1 FROM jobs j WHERE j.id = runs.job_id AND j.paused = 1)) \
         WHERE id = ? AND worker_id = ? AND attempt = ? AND state = 'running' RETURNING {RUN_COLUMNS}"
    ))
    .bind(s.state.as_str())
    .bind(s.retry_at.map(us))
    .bind(finished)
    .bind(us(now))
    .bind(output.map(|o| o.to_string()))
    .bind(error)
    .bind(&s.reason)
    // A retry of a paused job's run waits for resume like its other pending runs.
    .bind(s.state.as_str())
    .bind(&row.id)
    .bind(&row.worker_id)
    .bind(row.attempt)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    if updated.is_some() && row.overlap == Overlap::BufferOne.as_str() {
        unblock_next(tx, &row.job_id).await?;
    }
    Ok(updated)
}

async fn run_row(tx: &mut Tx, id: &str) -> Result<Option<RunRow>> {
    sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)
}

/// A claim or heartbeat is a sign of life: a dead worker comes back `active`. Draining
/// (deregistered) and unknown workers get `NotFound`.
async fn touch_worker(tx: &mut Tx, id: &str, now: Timestamp) -> Result<Vec<String>> {
    let row: Option<(String, String)> = sqlx::query_as(
        "UPDATE workers SET last_heartbeat = ?, state = 'active' WHERE id = ? AND state != 'draining' \
         RETURNING handlers, state",
    )
    .bind(us(now))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_err)?;
    let (handlers, _) = row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?;
    serde_json::from_str(&handlers).map_err(|e| StoreError::Internal(e.to_string()))
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
        let mut tx = self.begin().await?;
        let mut staged = Vec::new();
        let mut taken = HashMap::new();
        let mut decided = Vec::with_capacity(jobs.len());
        for c in jobs {
            decided.push(decide_one(&mut tx, c, now, &mut staged, &mut taken).await?);
        }
        insert_staged(&mut tx, &staged, now).await?;
        tx.commit().await.map_err(db_err)?;
        // Replays of earlier commits are read back after this one.
        let mut out = Vec::with_capacity(decided.len());
        for d in decided {
            out.push(match d {
                Decided::New(i) => Ok(JobCreated { job: staged[i].job.clone(), created: true }),
                Decided::SameAsStaged(i) => Ok(JobCreated { job: staged[i].job.clone(), created: false }),
                Decided::Existing(id) => self.job_get(&id, now).await.map(|job| JobCreated { job, created: false }),
                Decided::Refused(e) => Err(e),
            });
        }
        Ok(out)
    }

    async fn job_get(&self, id: &str, now: Timestamp) -> Result<Job> {
        let row: Option<JobRow> = sqlx::query_as(&format!("{JOB_SELECT} WHERE j.id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        Ok(self.jobs_from_rows(vec![row], now).await?.remove(0))
    }

    async fn job_list(&self, f: &JobFilter, now: Timestamp) -> Result<Page<Job>> {
        let mut q = super::listing::job_query::<Sqlite>(f)?;
        let mut rows: Vec<JobRow> = q.build_query_as().fetch_all(&self.read).await.map_err(db_err)?;
        let next_cursor = super::listing::split_page(&mut rows, f.limit, |r| (r.created_at, r.id.as_str()));
        Ok(Page { items: self.jobs_from_rows(rows, now).await?, next_cursor })
    }

    async fn job_update(&self, id: &str, spec: JobSpec, now: Timestamp) -> Result<Job> {
        let mut tx = self.begin().await?;
        let current: Option<(String, bool)> = sqlx::query_as("SELECT name, paused FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let (old_name, was_paused) = current.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let name = spec.name.clone().unwrap_or(old_name);
        let taken: Option<(String,)> =
            sqlx::query_as("SELECT id FROM jobs WHERE namespace = ? AND name = ? AND id != ?")
                .bind(&spec.namespace)
                .bind(&name)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        if taken.is_some() {
            return Err(StoreError::Conflict {
                code: "name_conflict",
                message: format!("name: {name:?} is taken in namespace {:?}", spec.namespace),
            });
        }
        if let Some(key) = &spec.idempotency_key {
            let taken: Option<(String,)> =
                sqlx::query_as("SELECT id FROM jobs WHERE namespace = ? AND idempotency_key = ? AND id != ?")
                    .bind(&spec.namespace)
                    .bind(key)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
            if taken.is_some() {
                return Err(StoreError::Conflict {
                    code: "idempotency_conflict",
                    message: format!("idempotency_key: {key:?} is used by another job"),
                });
            }
        }
        let snap = JobSnapshot::from_spec(id, &spec);
        sqlx::query(
            "UPDATE jobs SET namespace = ?, name = ?, handler = ?, payload = ?, priority = ?, max_attempts = ?, \
             initial_delay_us = ?, max_delay_us = ?, timeout_us = ?, overlap = ?, paused = ?, idempotency_key = ?, \
             fingerprint = ?, updated_at = ? WHERE id = ?",
        )
        .bind(&spec.namespace)
        .bind(&name)
        .bind(&snap.handler)
        .bind(&snap.payload)
        .bind(snap.priority)
        .bind(snap.max_attempts)
        .bind(snap.initial_delay_us)
        .bind(snap.max_delay_us)
        .bind(snap.timeout_us)
        .bind(&snap.overlap)
        .bind(spec.paused)
        .bind(&spec.idempotency_key)
        .bind(spec.fingerprint())
        .bind(us(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM triggers WHERE job_id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        let triggers = new_triggers(&spec, now);
        let rows: Vec<_> = triggers.iter().enumerate().map(|(pos, t)| (id, spec.paused, pos, t)).collect();
        insert_triggers(&mut tx, &rows).await?;
        if was_paused != spec.paused {
            sqlx::query("UPDATE runs SET held = ? WHERE job_id = ? AND state = 'pending' AND manual = 0")
                .bind(spec.paused)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        self.job_get(id, now).await
    }

    async fn job_delete(&self, id: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM jobs WHERE id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        sqlx::query("DELETE FROM triggers WHERE job_id = ?").bind(id).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query(
            "UPDATE runs SET state = 'cancelled', reason = 'job deleted', finished_at = ? \
             WHERE job_id = ? AND state = 'pending'",
        )
        .bind(us(now))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn job_set_paused(&self, id: &str, paused: bool, now: Timestamp) -> Result<Job> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE jobs SET paused = ?, updated_at = ? WHERE id = ?")
            .bind(paused)
            .bind(us(now))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        sqlx::query("UPDATE triggers SET paused = ? WHERE job_id = ?")
            .bind(paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // Manual runs of a paused job still run; everything else waits for resume.
        sqlx::query("UPDATE runs SET held = ? WHERE job_id = ? AND state = 'pending' AND manual = 0")
            .bind(paused)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.job_get(id, now).await
    }

    async fn job_run_now(&self, id: &str, now: Timestamp) -> Result<Run> {
        let mut tx = self.begin().await?;
        let snap: Option<JobSnapshot> =
            sqlx::query_as(&format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = ?"))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        let snap = snap.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let run = insert_untriggered(&mut tx, NewRun::untriggered(snap, now, false, true), us(now)).await?;
        let row = run_row(&mut tx, &run.id).await?.ok_or_else(|| StoreError::Internal("run vanished".into()))?;
        tx.commit().await.map_err(db_err)?;
        row.into_run()
    }

    async fn trigger_fire_due(&self, now: Timestamp, limit: u32, misfire_threshold: Duration) -> Result<FireReport> {
        let mut tx = self.begin().await?;
        let triggers: Vec<TriggerRow> = sqlx::query_as(&format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE paused = 0 AND next_fire_at IS NOT NULL \
             AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?"
        ))
        .bind(us(now))
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        if triggers.is_empty() {
            return Ok(FireReport::default());
        }
        let mut job_ids: Vec<String> = triggers.iter().map(|t| t.job_id.clone()).collect();
        job_ids.sort();
        job_ids.dedup();
        let snaps: Vec<JobSnapshot> = sqlx::query_as(&format!(
            "SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
        ))
        .bind(serde_json::to_string(&job_ids).expect("ids serialize"))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        let mut active = HashMap::new();
        for s in snaps.iter().filter(|s| s.overlap() != Overlap::Allow) {
            active.insert(s.id.clone(), active_runs(&mut tx, &s.id).await?);
        }
        let jobs: HashMap<String, JobSnapshot> = snaps.into_iter().map(|s| (s.id.clone(), s)).collect();
        let actions = fire_actions(&triggers, &jobs, &mut active, now, misfire_threshold)?;
        let mut advanced = std::collections::HashSet::new();
        for a in &actions.advances {
            let done = sqlx::query(
                "UPDATE triggers SET next_fire_at = ?, fires = fires + ? WHERE id = ? AND next_fire_at = ?",
            )
            .bind(a.new_next)
            .bind(a.fires_added)
            .bind(&a.id)
            .bind(a.old_next)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            if done.rows_affected() == 1 {
                advanced.insert(a.id.as_str());
            }
        }
        // Only triggers this pass advanced get runs; another scheduler that got to a trigger
        // first creates that trigger's runs itself.
        let runs: Vec<&NewRun> =
            actions.inserts.iter().filter(|r| r.trigger_id.as_deref().is_some_and(|t| advanced.contains(t))).collect();
        insert_runs(&mut tx, &runs).await?;
        for (id, reason) in &actions.cancel_pending {
            cancel_pending(&mut tx, id, reason, us(now)).await?;
        }
        for id in &actions.cancel_running {
            request_cancel(&mut tx, id).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(actions.report())
    }

    async fn trigger_next_due(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_fire_at) FROM triggers WHERE paused = 0 AND next_fire_at IS NOT NULL")
                .fetch_one(&self.read)
                .await
                .map_err(db_err)?;
        Ok(next.map(ts))
    }

    async fn run_get(&self, id: &str) -> Result<Run> {
        let row: Option<RunRow> = sqlx::query_as(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?.into_run()
    }

    async fn run_list(&self, f: &RunFilter) -> Result<Page<Run>> {
        let mut q = super::listing::run_query::<Sqlite>(f)?;
        let mut rows: Vec<RunRow> = q.build_query_as().fetch_all(&self.read).await.map_err(db_err)?;
        let next_cursor = super::listing::split_page(&mut rows, f.limit, |r| (r.scheduled_for, r.id.as_str()));
        Ok(Page { items: rows.into_iter().map(RunRow::into_run).collect::<Result<_>>()?, next_cursor })
    }

    async fn run_cancel(&self, id: &str, now: Timestamp) -> Result<Run> {
        let mut tx = self.begin().await?;
        let row = run_row(&mut tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        match row.state()? {
            RunState::Pending => {
                cancel_pending(&mut tx, id, "cancelled by request", us(now)).await?;
                if row.overlap == Overlap::BufferOne.as_str() {
                    unblock_next(&mut tx, &row.job_id).await?;
                }
            }
            RunState::Running => request_cancel(&mut tx, id).await?,
            _ => return Err(StoreError::AlreadyFinished(id.to_string())),
        }
        let row = run_row(&mut tx, id).await?.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?;
        tx.commit().await.map_err(db_err)?;
        row.into_run()
    }

    async fn run_claim(&self, p: &ClaimParams) -> Result<Vec<ClaimedRun>> {
        let mut tx = self.begin().await?;
        let handlers = touch_worker(&mut tx, &p.worker_id, p.now).await?;
        let rows: Vec<RunRow> = if p.max == 0 || handlers.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as(&format!(
                "UPDATE runs SET state = 'running', attempt = attempt + 1, worker_id = ?1, lease_expires_at = ?2, \
                 started_at = ?3, reason = NULL WHERE id IN (SELECT id FROM runs INDEXED BY runs_ready WHERE state = 'pending' \
                 AND held = 0 AND blocked = 0 AND scheduled_for <= ?3 AND +handler IN (SELECT value FROM json_each(?4)) \
                 ORDER BY priority DESC, scheduled_for, id LIMIT ?5) RETURNING {RUN_COLUMNS}"
            ))
            .bind(&p.worker_id)
            .bind(us(p.now) + dur_us(p.lease))
            .bind(us(p.now))
            .bind(serde_json::to_string(&handlers).expect("handlers serialize"))
            .bind(p.max as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
        };
        tx.commit().await.map_err(db_err)?;
        let mut claimed: Vec<ClaimedRun> = rows.into_iter().map(RunRow::into_claimed).collect::<Result<_>>()?;
        claimed.sort_by_key(|c| c.scheduled_for);
        Ok(claimed)
    }

    async fn run_heartbeat(
        &self,
        worker_id: &str,
        runs: &[(String, u32)],
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatOutcome> {
        let mut tx = self.begin().await?;
        touch_worker(&mut tx, worker_id, now).await?;
        let expires = us(now) + dur_us(lease);
        let mut out = HeartbeatOutcome { lease_expires_at: Some(ts(expires)), ..Default::default() };
        for (run_id, attempt) in runs {
            let held: Option<(bool,)> = sqlx::query_as(
                "UPDATE runs SET lease_expires_at = ? WHERE id = ? AND worker_id = ? AND attempt = ? \
                 AND state = 'running' RETURNING cancel_requested",
            )
            .bind(expires)
            .bind(run_id)
            .bind(worker_id)
            .bind(*attempt as i64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
            match held {
                None => out.lost.push(run_id.clone()),
                Some((true,)) => out.cancel.push(run_id.clone()),
                Some((false,)) => {}
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn run_complete_many(&self, completions: Vec<Completion>, now: Timestamp) -> Result<Vec<Result<Run>>> {
        let mut tx = self.begin().await?;
        let mut out = Vec::with_capacity(completions.len());
        for c in completions {
            let Some(row) = run_row(&mut tx, &c.run_id).await? else {
                out.push(Err(StoreError::NotFound(format!("run {}", c.run_id))));
                continue;
            };
            let held = row.state == "running"
                && row.worker_id.as_deref() == Some(c.worker_id.as_str())
                && row.attempt == c.attempt as i64;
            if !held {
                out.push(Err(StoreError::StaleAttempt(c.run_id)));
                continue;
            }
            let updated =
                apply_settlement(&mut tx, &row, Ended::Reported(c.state), c.output.as_ref(), c.error.as_deref(), now)
                    .await?;
            out.push(match updated {
                Some(r) => r.into_run(),
                None => Err(StoreError::StaleAttempt(c.run_id)),
            });
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn run_reap(&self, p: &ReapParams) -> Result<ReapReport> {
        let mut tx = self.begin().await?;
        let now = us(p.now);
        let mut report = ReapReport::default();
        let dead: Vec<(String,)> = sqlx::query_as(
            "UPDATE workers SET state = 'dead' WHERE state = 'active' AND last_heartbeat < ? RETURNING id",
        )
        .bind(now - dur_us(p.dead_after))
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        report.workers_dead = dead.len() as u64;
        // A deregistered worker that holds nothing any more is forgotten.
        sqlx::query(
            "DELETE FROM workers WHERE state = 'draining' AND last_heartbeat < ? AND NOT EXISTS \
             (SELECT 1 FROM runs r WHERE r.worker_id = workers.id AND r.state = 'running')",
        )
        .bind(now - dur_us(p.dead_after))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let expired: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND (lease_expires_at < ?1 OR worker_id IN \
             (SELECT id FROM workers WHERE state = 'dead')) ORDER BY lease_expires_at LIMIT ?2"
        ))
        .bind(now)
        .bind(p.limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for row in &expired {
            if let Some(r) = apply_settlement(&mut tx, row, Ended::LeaseExpired, None, None, p.now).await? {
                report.expired.push((r.id.clone(), r.state()?));
            }
        }
        let overrun: Vec<RunRow> = sqlx::query_as(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND timeout_us IS NOT NULL \
             AND started_at + timeout_us + ?1 < ?2 LIMIT ?3"
        ))
        .bind(dur_us(p.timeout_grace))
        .bind(now)
        .bind(p.limit as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        for row in &overrun {
            if let Some(r) = apply_settlement(&mut tx, row, Ended::TimeoutOverrun, None, None, p.now).await? {
                report.timed_out.push((r.id.clone(), r.state()?));
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(report)
    }

    async fn run_next_pending(&self) -> Result<Option<Timestamp>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(scheduled_for) FROM runs WHERE state = 'pending' AND held = 0 AND blocked = 0",
        )
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        Ok(next.map(ts))
    }

    async fn run_prune(&self, before: Timestamp, limit: u32) -> Result<u64> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?)",
        )
        .bind(us(before))
        .bind(limit as i64)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
    }

    async fn worker_register(&self, name: &str, handlers: &[String], capacity: u32, now: Timestamp) -> Result<Worker> {
        let id = new_id();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO workers (id, name, handlers, capacity, last_heartbeat, state, created_at) \
             VALUES (?,?,?,?,?,'active',?)",
        )
        .bind(&id)
        .bind(name)
        .bind(serde_json::to_string(handlers).expect("handlers serialize"))
        .bind(capacity as i64)
        .bind(us(now))
        .bind(us(now))
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        self.worker_get(&id).await
    }

    async fn worker_get(&self, id: &str) -> Result<Worker> {
        let row: Option<WorkerRow> = sqlx::query_as(&format!("{WORKER_SELECT} WHERE w.id = ?"))
            .bind(id)
            .fetch_optional(&self.write)
            .await
            .map_err(db_err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?.into_worker()
    }

    async fn worker_list(&self) -> Result<Vec<Worker>> {
        let rows: Vec<WorkerRow> = sqlx::query_as(&format!("{WORKER_SELECT} ORDER BY w.created_at DESC, w.id DESC"))
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        rows.into_iter().map(WorkerRow::into_worker).collect()
    }

    async fn worker_deregister(&self, id: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE workers SET state = 'draining', last_heartbeat = ? WHERE id = ?")
            .bind(us(now))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("worker {id}")));
        }
        tx.commit().await.map_err(db_err)
    }

    async fn stats(&self, now: Timestamp) -> Result<Stats> {
        let by_state: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM runs GROUP BY state")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        let (due, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(scheduled_for) FROM runs WHERE state = 'pending' AND held = 0 AND blocked = 0 \
             AND scheduled_for <= ?",
        )
        .bind(us(now))
        .fetch_one(&self.read)
        .await
        .map_err(db_err)?;
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&self.read).await.map_err(db_err)?;
        let triggers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM triggers WHERE next_fire_at IS NOT NULL")
            .fetch_one(&self.read)
            .await
            .map_err(db_err)?;
        let workers: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM workers GROUP BY state")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?;
        Ok(Stats {
            runs_by_state: by_state.into_iter().filter_map(|(s, n)| Some((RunState::parse(&s)?, n as u64))).collect(),
            runs_due: due as u64,
            oldest_due_wait_s: oldest.map(|o| (us(now) - o) as f64 / 1e6).unwrap_or(0.0),
            jobs: jobs as u64,
            triggers_active: triggers as u64,
            workers_by_state: workers
                .into_iter()
                .filter_map(|(s, n)| Some((crate::domain::WorkerState::parse(&s)?, n as u64)))
                .collect(),
        })
    }
}
