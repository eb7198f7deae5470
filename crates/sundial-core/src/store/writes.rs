//! The statements inside write transactions whose SQL both dialects share, written once:
//! [`Dialect`] (what differs between SQLite and PostgreSQL: error mapping, how a false boolean, a
//! list bound as one parameter and a row lock are written) and [`Writes`], generic over the
//! database. Both drivers read `$N` as the N-th argument, so one text serves both.
//!
//! What stays in a backend's files is what really differs: PostgreSQL's lock order and its
//! `UNNEST` batches, SQLite's multi-row inserts and row-at-a-time updates.

use super::fire::{backfill_actions, backfill_due, calendar_names, calendars_of, FireActions, JobSnapshot, NewRun};
use super::fire::{trigger_ids, JOB_SNAPSHOT_COLUMNS};
use super::limits::{bound_columns, LimitRow, LIMIT_COLUMNS};
use super::plan::{update_conflict, RetryWrite, Taken, NOTE_THEN};
use super::rows::{
    ts, us, CalendarRow, RunRow, TriggerRow, WorkerScope, CALENDAR_COLUMNS, RUN_COLUMNS, TRIGGER_COLUMNS,
};
use super::{Result, StoreError, Timestamp};
use crate::domain::{BackfillRequest, JobSpec, LimitBounds, LimitDef, LimitKey, Overlap, RunState};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use crate::schedule::Calendar;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Transaction, Type};
use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;

/// What differs between the two dialects in the SQL written once (implemented by each backend
/// for its database).
pub(crate) trait Dialect: Database {
    /// Maps driver errors to domain errors.
    fn err(e: sqlx::Error) -> StoreError;
    /// How many rows a statement changed (the drivers' results share no trait for it).
    fn changed(done: Self::QueryResult) -> u64;
    /// A list of strings bound as one parameter (see [`Dialect::in_list`]).
    type List<'a>: for<'q> Encode<'q, Self> + Type<Self> + 'a;
    /// Whether reads that decide writes lock rows (PostgreSQL: `FOR UPDATE`, `FOR SHARE`, picks
    /// that pass over rows other nodes hold with `SKIP LOCKED`). SQLite does not: its one writer
    /// (`BEGIN IMMEDIATE`) already keeps everyone else out.
    const ROW_LOCKS: bool;
    /// `(handler, live workers serving it)`: a worker's `handlers` is a JSON array.
    const WORKER_HANDLERS: &'static str;
    /// "This boolean column is false", written as the backend's partial indexes are (SQLite
    /// `c = 0`, PostgreSQL `NOT c`) so the planner uses them.
    fn is_false(column: &str) -> String;
    /// A list as [`Dialect::in_list`] binds it (PostgreSQL an array, SQLite a JSON array).
    fn list(items: &[String]) -> Self::List<'_>;
    /// "`column` is one of the list bound at `param`" ([`Dialect::list`]).
    fn in_list(column: &str, param: &str) -> String;
    /// "The trigger's `spec` names the calendar bound at `param`".
    fn names_calendar(param: &str) -> String;
}

/// Where a write of one statement runs: a pooled connection on PostgreSQL (the statement commits
/// by itself), a transaction on SQLite (`BEGIN IMMEDIATE`, so it queues behind other writers like
/// every write there). [`OneWrite::done`] commits it.
pub(crate) enum OneWrite<DB: Database> {
    /// The statement is its own transaction.
    Pooled(PoolConnection<DB>),
    /// Committed by [`OneWrite::done`].
    Tx(Transaction<'static, DB>),
}

impl<DB: Dialect> OneWrite<DB> {
    /// Commits, where there is a transaction to commit.
    pub(crate) async fn done(self) -> Result<()> {
        match self {
            OneWrite::Pooled(_) => Ok(()),
            OneWrite::Tx(tx) => tx.commit().await.map_err(DB::err),
        }
    }
}

impl<DB: Database> std::ops::Deref for OneWrite<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        match self {
            OneWrite::Pooled(c) => c,
            OneWrite::Tx(tx) => tx,
        }
    }
}

impl<DB: Database> std::ops::DerefMut for OneWrite<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            OneWrite::Pooled(c) => c,
            OneWrite::Tx(tx) => tx,
        }
    }
}

/// The shared statements, on a connection of `DB` (a transaction's, or one from the pool).
pub(crate) struct Writes<DB>(PhantomData<DB>);

impl<DB> Writes<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Type<DB>,
    for<'r> RunRow: FromRow<'r, DB::Row>,
    for<'r> TriggerRow: FromRow<'r, DB::Row>,
    for<'r> JobSnapshot: FromRow<'r, DB::Row>,
    for<'r> CalendarRow: FromRow<'r, DB::Row>,
    for<'r> LimitRow: FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
    for<'r> (String, bool): FromRow<'r, DB::Row>,
    for<'r> (bool, i64): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (String, Option<String>): FromRow<'r, DB::Row>,
    for<'r> (String, String, String, bool): FromRow<'r, DB::Row>,
{
    /// ` FOR UPDATE` where the dialect locks rows.
    fn for_update() -> &'static str {
        if DB::ROW_LOCKS {
            " FOR UPDATE"
        } else {
            ""
        }
    }

    /// Locks the rows of `table` (a name or alias) a pick takes, passing over those another node
    /// holds, where the dialect locks rows.
    fn skip_locked(table: &str) -> String {
        if DB::ROW_LOCKS {
            format!(" FOR UPDATE OF {table} SKIP LOCKED")
        } else {
            String::new()
        }
    }

    // ---- jobs ----------------------------------------------------------------------------

    /// The first half of [`Store::job_update`](super::Store::job_update): checks the new name and
    /// key against the other jobs, writes the definition (a resume, or dropping the
    /// `pause_after_failures` threshold, clears the server's pause reason and the count) and drops
    /// the old triggers. Returns whether the job was paused before. The caller stores the new
    /// triggers, then [`Writes::hold_runs`] when `paused` changed.
    pub(crate) async fn replace_job(
        conn: &mut DB::Connection,
        id: &str,
        spec: &JobSpec,
        now: Timestamp,
    ) -> Result<bool> {
        let sql = format!("SELECT name, paused FROM jobs WHERE id = $1{}", Self::for_update());
        let current: Option<(String, bool)> =
            sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)?;
        let (old_name, was_paused) = current.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        let name = spec.name.clone().unwrap_or(old_name);
        let taken = [("name", Some(&name)), ("idempotency_key", spec.idempotency_key.as_ref())];
        for (column, value) in taken {
            let Some(value) = value else { continue };
            let sql = format!("SELECT id FROM jobs WHERE namespace = $1 AND {column} = $2 AND id <> $3");
            let q = sqlx::query_as(&sql).bind(&spec.namespace).bind(value).bind(id.to_string());
            let other: Option<(String,)> = q.fetch_optional(&mut *conn).await.map_err(DB::err)?;
            if other.is_some() {
                return Err(update_conflict(match column {
                    "name" => Taken::Name { name: value, namespace: &spec.namespace },
                    _ => Taken::Key(value),
                }));
            }
        }
        let snap = JobSnapshot::from_spec(id, spec);
        sqlx::query(
            "UPDATE jobs SET namespace = $1, name = $2, handler = $3, payload = $4, priority = $5, \
             max_attempts = $6, initial_delay_us = $7, max_delay_us = $8, timeout_us = $9, overlap = $10, \
             paused = $11, idempotency_key = $12, fingerprint = $13, updated_at = $14, limits = $16, \
             pause_after_failures = $17, paused_reason = CASE WHEN $11 THEN paused_reason END, \
             failure_streak = CASE WHEN $18 THEN 0 ELSE failure_streak END WHERE id = $15",
        )
        .bind(&spec.namespace)
        .bind(name)
        .bind(snap.handler)
        .bind(snap.payload)
        .bind(snap.priority)
        .bind(snap.max_attempts)
        .bind(snap.initial_delay_us)
        .bind(snap.max_delay_us)
        .bind(snap.timeout_us)
        .bind(snap.overlap)
        .bind(spec.paused)
        .bind(&spec.idempotency_key)
        .bind(spec.fingerprint())
        .bind(us(now))
        .bind(id.to_string())
        .bind(snap.limits)
        .bind(spec.pause_after_failures.map(i64::from))
        // The count is kept only while a threshold is set.
        .bind((was_paused && !spec.paused) || spec.pause_after_failures.is_none())
        .execute(&mut *conn)
        .await
        .map_err(DB::err)?;
        let q = sqlx::query("DELETE FROM triggers WHERE job_id = $1").bind(id.to_string());
        q.execute(&mut *conn).await.map_err(DB::err)?;
        Ok(was_paused)
    }

    /// [`Store::job_delete`](super::Store::job_delete) once the caller holds the locks: the job,
    /// its triggers, and its pending runs become `cancelled` (`job deleted`).
    pub(crate) async fn delete_job(conn: &mut DB::Connection, id: &str, now: Timestamp) -> Result<()> {
        let q = sqlx::query("DELETE FROM jobs WHERE id = $1").bind(id.to_string());
        if DB::changed(q.execute(&mut *conn).await.map_err(DB::err)?) == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        let q = sqlx::query("DELETE FROM triggers WHERE job_id = $1").bind(id.to_string());
        q.execute(&mut *conn).await.map_err(DB::err)?;
        let sql = format!(
            "UPDATE runs SET state = 'cancelled', reason = {NOTE_THEN} 'job deleted', finished_at = $1 \
             WHERE job_id = $2 AND state = 'pending'"
        );
        sqlx::query(&sql).bind(us(now)).bind(id.to_string()).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(())
    }

    /// [`Store::job_set_paused`](super::Store::job_set_paused) once the caller holds the locks. A
    /// resume clears the server's reason and resets the count of failed runs in a row.
    pub(crate) async fn set_paused(conn: &mut DB::Connection, id: &str, paused: bool, now: Timestamp) -> Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET paused = $1, updated_at = $2, paused_reason = CASE WHEN $1 THEN paused_reason END, \
             failure_streak = CASE WHEN $1 THEN failure_streak ELSE 0 END WHERE id = $3",
        )
        .bind(paused)
        .bind(us(now))
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(DB::err)?;
        if DB::changed(done) == 0 {
            return Err(StoreError::NotFound(format!("job {id}")));
        }
        Self::hold_jobs(conn, &[id.to_string()], paused).await
    }

    /// Stops (or restarts) paused (or resumed) jobs' triggers, and holds (or releases) their
    /// pending runs. The caller holds the jobs' triggers' and rows' locks.
    pub(crate) async fn hold_jobs(conn: &mut DB::Connection, ids: &[String], paused: bool) -> Result<()> {
        let sql = format!("UPDATE triggers SET paused = $1 WHERE {}", DB::in_list("job_id", "$2"));
        sqlx::query(&sql).bind(paused).bind(DB::list(ids)).execute(&mut *conn).await.map_err(DB::err)?;
        Self::hold_runs(conn, ids, paused).await
    }

    /// Holds (or releases) the pending runs of jobs. Manual runs of a paused job still run;
    /// everything else waits for resume.
    pub(crate) async fn hold_runs(conn: &mut DB::Connection, ids: &[String], paused: bool) -> Result<()> {
        let sql = format!(
            "UPDATE runs SET held = $1 WHERE {} AND state = 'pending' AND {}",
            DB::in_list("job_id", "$2"),
            DB::is_false("manual")
        );
        sqlx::query(&sql).bind(paused).bind(DB::list(ids)).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(())
    }

    /// What a run of the job `id` snapshots; its row locked when `lock` (an overlap decision).
    pub(crate) async fn job_snapshot(conn: &mut DB::Connection, id: &str, lock: bool) -> Result<JobSnapshot> {
        let lock = if lock { Self::for_update() } else { "" };
        let sql = format!("SELECT {JOB_SNAPSHOT_COLUMNS} FROM jobs WHERE id = $1{lock}");
        let snap: Option<JobSnapshot> =
            sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)?;
        snap.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    // ---- triggers ------------------------------------------------------------------------

    /// Up to `limit` due triggers of unpaused jobs, soonest first, and their jobs' ids (sorted).
    /// On PostgreSQL other nodes' schedulers take other due triggers; none waits for another.
    pub(crate) async fn due_triggers(
        conn: &mut DB::Connection,
        now: Timestamp,
        limit: u32,
    ) -> Result<(Vec<TriggerRow>, Vec<String>)> {
        let sql = format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE {} AND next_fire_at IS NOT NULL \
             AND next_fire_at <= $1 ORDER BY next_fire_at LIMIT $2{}",
            DB::is_false("paused"),
            Self::skip_locked("triggers")
        );
        let q = sqlx::query_as(&sql).bind(us(now)).bind(i64::from(limit));
        let triggers: Vec<TriggerRow> = q.fetch_all(&mut *conn).await.map_err(DB::err)?;
        let mut job_ids: Vec<String> = triggers.iter().map(|t| t.job_id.clone()).collect();
        job_ids.sort_unstable();
        job_ids.dedup();
        Ok((triggers, job_ids))
    }

    /// What a backfill of the job `id` does ([`backfill_actions`]), whether the job is paused, and
    /// how many due times the request covers. Reads in the lock order: the triggers (not locked),
    /// then the job, whose row is locked only when overlap decisions need its active runs, as on
    /// the fire path.
    pub(crate) async fn backfill_plan(
        conn: &mut DB::Connection,
        id: &str,
        req: &BackfillRequest,
        now: Timestamp,
    ) -> Result<(FireActions, bool, u64)> {
        let policy = req.overlap.unwrap_or_default();
        let triggers = Self::triggers_of(conn, id).await?;
        let job = Self::job_snapshot(conn, id, policy != Overlap::Allow).await?;
        let q = sqlx::query_as("SELECT paused, updated_at FROM jobs WHERE id = $1").bind(id.to_string());
        let (paused, updated_at): (bool, i64) = q.fetch_one(&mut *conn).await.map_err(DB::err)?;
        let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
        let calendars = Self::calendars(conn, &calendar_names(&specs), false).await?;
        let due = backfill_due(&triggers, &calendars, req, ts(updated_at), now)?;
        // A range scan of the once-per-due-time key's index.
        let sql = format!(
            "SELECT trigger_id, fire_time FROM runs WHERE {} AND fire_time >= $2 AND fire_time < $3",
            DB::in_list("trigger_id", "$1")
        );
        let ids = trigger_ids(&due);
        let q = sqlx::query_as(&sql).bind(DB::list(&ids)).bind(us(req.from)).bind(us(req.until));
        let existing: Vec<(String, i64)> = q.fetch_all(&mut *conn).await.map_err(DB::err)?;
        let existing: HashSet<(String, i64)> = existing.into_iter().collect();
        let active = match policy {
            Overlap::Allow => ActiveRuns::default(),
            _ => Self::active_runs(conn, &[id.to_string()]).await?.remove(id).unwrap_or_default(),
        };
        let (actions, _) = backfill_actions(&job, paused, &due, &existing, policy, active, now);
        Ok((actions, paused, due.len() as u64))
    }

    /// A job's triggers, by position.
    pub(crate) async fn triggers_of(conn: &mut DB::Connection, job_id: &str) -> Result<Vec<TriggerRow>> {
        let sql = format!("SELECT {TRIGGER_COLUMNS} FROM triggers WHERE job_id = $1 ORDER BY position");
        sqlx::query_as(&sql).bind(job_id.to_string()).fetch_all(&mut *conn).await.map_err(DB::err)
    }

    // ---- runs ----------------------------------------------------------------------------

    /// The active runs of several jobs, each job's oldest first.
    pub(crate) async fn active_runs(
        conn: &mut DB::Connection,
        job_ids: &[String],
    ) -> Result<HashMap<String, ActiveRuns>> {
        let mut out: HashMap<String, ActiveRuns> =
            job_ids.iter().map(|id| (id.clone(), ActiveRuns::default())).collect();
        if job_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT job_id, id, state, blocked FROM runs WHERE {} AND state IN ('pending', 'running') \
             ORDER BY scheduled_for, id",
            DB::in_list("job_id", "$1")
        );
        let q = sqlx::query_as(&sql).bind(DB::list(job_ids));
        let rows: Vec<(String, String, String, bool)> = q.fetch_all(&mut *conn).await.map_err(DB::err)?;
        for (job_id, id, state, blocked) in rows {
            let a = out.entry(job_id).or_default();
            match (state.as_str(), blocked) {
                ("running", _) => a.running.push(id),
                (_, true) => a.blocked.push(id),
                _ => a.pending.push(id),
            }
        }
        Ok(out)
    }

    /// Applies the job's overlap policy to a run not from a trigger, against the job's active
    /// runs: the run becomes blocked or skipped, or it supersedes others, returned as `(pending
    /// runs to cancel with their reason, running runs to ask to stop)` for the caller to write.
    /// On PostgreSQL the caller holds the job's row lock.
    pub(crate) async fn place_untriggered(
        conn: &mut DB::Connection,
        run: &mut NewRun,
    ) -> Result<(Vec<(String, String)>, Vec<String>)> {
        if run.job.overlap() == Overlap::Allow {
            return Ok(Default::default());
        }
        let job = std::slice::from_ref(&run.job.id);
        let mut active = Self::active_runs(conn, job).await?.remove(&run.job.id).unwrap_or_default();
        match decide(run.job.overlap(), &mut active, &run.id) {
            Decision::Pending { blocked } => run.blocked = blocked,
            Decision::Skipped(why) => {
                run.state = RunState::Skipped;
                run.reason = Some(why);
            }
            Decision::Supersede { cancel_pending, cancel_running } => {
                let reason = superseded_reason(&run.id);
                return Ok((cancel_pending.into_iter().map(|id| (id, reason.clone())).collect(), cancel_running));
            }
        }
        Ok(Default::default())
    }

    /// Asks running runs to stop (their workers hear it on their next heartbeat).
    pub(crate) async fn request_cancel(conn: &mut DB::Connection, run_ids: &[String]) -> Result<()> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let sql =
            format!("UPDATE runs SET cancel_requested = TRUE WHERE {} AND state = 'running'", DB::in_list("id", "$1"));
        sqlx::query(&sql).bind(DB::list(run_ids)).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(())
    }

    /// `buffer_one`: when the job has nothing running or claimable left, its waiting run may go.
    /// On PostgreSQL the caller holds the job's row lock, so a scheduler cannot add a blocked run
    /// unseen.
    pub(crate) async fn unblock_next(conn: &mut DB::Connection, job_id: &str) -> Result<()> {
        let sql = format!(
            "UPDATE runs SET blocked = FALSE WHERE id = (SELECT id FROM runs WHERE job_id = $1 AND state = 'pending' \
             AND blocked = TRUE ORDER BY scheduled_for, id LIMIT 1) AND NOT EXISTS (SELECT 1 FROM runs \
             WHERE job_id = $1 AND (state = 'running' OR (state = 'pending' AND {})))",
            DB::is_false("blocked")
        );
        sqlx::query(&sql).bind(job_id.to_string()).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(())
    }

    /// One run's row, locked when `lock`.
    pub(crate) async fn run_row(conn: &mut DB::Connection, id: &str, lock: bool) -> Result<Option<RunRow>> {
        let lock = if lock { Self::for_update() } else { "" };
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1{lock}");
        sqlx::query_as(&sql).bind(id.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)
    }

    /// Writes an operator's retry ([`super::plan::operator_retry`]): the run goes back to
    /// `pending`, due now. A paused job's retried run waits for resume like its other pending runs.
    pub(crate) async fn retry(conn: &mut DB::Connection, id: &str, w: &RetryWrite, now: Timestamp) -> Result<RunRow> {
        let sql = format!(
            "UPDATE runs SET state = 'pending', scheduled_for = $1, max_attempts = $2, reason = $3, note = $5, \
             finished_at = NULL, lease_expires_at = NULL, cancel_requested = FALSE, blocked = FALSE, \
             held = {} AND COALESCE((SELECT j.paused FROM jobs j WHERE j.id = runs.job_id), FALSE) \
             WHERE id = $4 RETURNING {RUN_COLUMNS}",
            DB::is_false("manual")
        );
        sqlx::query_as(&sql)
            .bind(us(now))
            .bind(w.max_attempts)
            .bind(&w.reason)
            .bind(id.to_string())
            .bind(&w.note)
            .fetch_one(&mut *conn)
            .await
            .map_err(DB::err)
    }

    /// The reaper's picks: up to `limit` running runs whose lease expired or whose worker died,
    /// soonest expiry first.
    pub(crate) async fn expired_runs(conn: &mut DB::Connection, now: i64, limit: u32) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND (lease_expires_at < $1 OR worker_id IN \
             (SELECT id FROM workers WHERE state = 'dead')) ORDER BY lease_expires_at LIMIT $2{}",
            Self::skip_locked("runs")
        );
        sqlx::query_as(&sql).bind(now).bind(i64::from(limit)).fetch_all(&mut *conn).await.map_err(DB::err)
    }

    /// The reaper's picks: up to `limit` running runs past their timeout by more than `grace` µs.
    pub(crate) async fn overrun_runs(
        conn: &mut DB::Connection,
        grace: i64,
        now: i64,
        limit: u32,
    ) -> Result<Vec<RunRow>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state = 'running' AND timeout_us IS NOT NULL \
             AND started_at + timeout_us + $1 < $2 LIMIT $3{}",
            Self::skip_locked("runs")
        );
        let q = sqlx::query_as(&sql).bind(grace).bind(now).bind(i64::from(limit));
        q.fetch_all(&mut *conn).await.map_err(DB::err)
    }

    // ---- workers -------------------------------------------------------------------------

    /// A claim or heartbeat is a sign of life: a dead worker comes back `active`. Draining
    /// (deregistered) and unknown workers get `NotFound`.
    pub(crate) async fn touch_worker(conn: &mut DB::Connection, id: &str, now: Timestamp) -> Result<WorkerScope> {
        let q = sqlx::query_as(
            "UPDATE workers SET last_heartbeat = $1, state = 'active' WHERE id = $2 AND state <> 'draining' \
             RETURNING handlers, namespaces",
        );
        let row: Option<(String, Option<String>)> =
            q.bind(us(now)).bind(id.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)?;
        let (handlers, namespaces) = row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?;
        WorkerScope::parse(&handlers, namespaces.as_deref())
    }

    /// Stores a new worker serving `scope`; returns its id.
    pub(crate) async fn insert_worker(
        conn: &mut DB::Connection,
        name: &str,
        capacity: u32,
        scope: &WorkerScope,
        now: Timestamp,
    ) -> Result<String> {
        let id = crate::domain::new_id();
        let json = |v: &[String]| serde_json::to_string(v).expect("names serialize");
        sqlx::query(
            "INSERT INTO workers (id, name, handlers, capacity, last_heartbeat, state, created_at, namespaces) \
             VALUES ($1, $2, $3, $4, $5, 'active', $5, $6)",
        )
        .bind(id.clone())
        .bind(name.to_string())
        .bind(json(&scope.handlers))
        .bind(i64::from(capacity))
        .bind(us(now))
        .bind(scope.namespaces.as_deref().map(json))
        .execute(&mut *conn)
        .await
        .map_err(DB::err)?;
        Ok(id)
    }

    /// [`Store::worker_deregister`](super::Store::worker_deregister).
    pub(crate) async fn drain_worker(conn: &mut DB::Connection, id: &str, now: Timestamp) -> Result<()> {
        let q = sqlx::query("UPDATE workers SET state = 'draining', last_heartbeat = $1 WHERE id = $2");
        let done = q.bind(us(now)).bind(id.to_string()).execute(&mut *conn).await.map_err(DB::err)?;
        match DB::changed(done) {
            0 => Err(StoreError::NotFound(format!("worker {id}"))),
            _ => Ok(()),
        }
    }

    /// [`Store::worker_forget_dead`](super::Store::worker_forget_dead).
    pub(crate) async fn forget_dead(conn: &mut DB::Connection, before: Timestamp, limit: u32) -> Result<u64> {
        let q = sqlx::query(
            "DELETE FROM workers WHERE id IN (SELECT id FROM workers w WHERE w.state = 'dead' AND w.last_heartbeat < $1 \
             AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.worker_id = w.id AND r.state = 'running') LIMIT $2)",
        );
        let done = q.bind(us(before)).bind(i64::from(limit)).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(DB::changed(done))
    }

    /// The reaper's first step: workers silent since before `before` are `dead` (returns how
    /// many), and a deregistered one that holds nothing any more is forgotten.
    pub(crate) async fn reap_workers(conn: &mut DB::Connection, before: i64) -> Result<u64> {
        let sql = format!(
            "UPDATE workers SET state = 'dead' WHERE id IN (SELECT id FROM workers WHERE state = 'active' \
             AND last_heartbeat < $1{}) RETURNING id",
            Self::skip_locked("workers")
        );
        let dead: Vec<(String,)> = sqlx::query_as(&sql).bind(before).fetch_all(&mut *conn).await.map_err(DB::err)?;
        let sql = format!(
            "DELETE FROM workers WHERE id IN (SELECT w.id FROM workers w WHERE w.state = 'draining' \
             AND w.last_heartbeat < $1 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.worker_id = w.id \
             AND r.state = 'running'){})",
            Self::skip_locked("w")
        );
        sqlx::query(&sql).bind(before).execute(&mut *conn).await.map_err(DB::err)?;
        Ok(dead.len() as u64)
    }

    // ---- calendars -----------------------------------------------------------------------

    /// The calendars among `names` that exist, compiled; read `FOR SHARE` (in name
    /// order) when `share`: the caller is about to store triggers naming them.
    pub(crate) async fn calendars(
        conn: &mut DB::Connection,
        names: &[String],
        share: bool,
    ) -> Result<HashMap<String, Calendar>> {
        if names.is_empty() {
            return Ok(HashMap::new());
        }
        let lock = if share && DB::ROW_LOCKS { " ORDER BY name FOR SHARE" } else { "" };
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE {}{lock}", DB::in_list("name", "$1"));
        let rows: Vec<CalendarRow> =
            sqlx::query_as(&sql).bind(DB::list(names)).fetch_all(&mut *conn).await.map_err(DB::err)?;
        super::rows::compile_calendars(rows)
    }

    /// The triggers naming the calendar `name` that have a due time after `now` (those still to
    /// plan one at or before `now` read the calendar when they do), locked in id order.
    pub(crate) async fn triggers_naming(
        conn: &mut DB::Connection,
        name: &str,
        now: Timestamp,
    ) -> Result<Vec<TriggerRow>> {
        let sql = format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE next_fire_at > $1 AND {} ORDER BY id{}",
            DB::names_calendar("$2"),
            Self::for_update()
        );
        let q = sqlx::query_as(&sql).bind(us(now)).bind(name.to_string());
        q.fetch_all(&mut *conn).await.map_err(DB::err)
    }

    /// Creates or replaces a calendar (a replace keeps `created_at`).
    pub(crate) async fn upsert_calendar(
        conn: &mut DB::Connection,
        calendar: &Calendar,
        exclude: &[serde_json::Value],
        now: Timestamp,
    ) -> Result<CalendarRow> {
        let sql = format!(
            "INSERT INTO calendars (name, timezone, exclude, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET timezone = excluded.timezone, exclude = excluded.exclude, \
             updated_at = excluded.updated_at RETURNING {CALENDAR_COLUMNS}"
        );
        sqlx::query_as(&sql)
            .bind(&calendar.name)
            .bind(&calendar.timezone)
            .bind(serde_json::to_string(exclude).expect("exclude serializes"))
            .bind(us(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(DB::err)
    }

    /// The triggers among `triggers` whose next due time changes now that a calendar they name
    /// changed, with the new time (see `store/fire.rs` for why only from `now` on).
    pub(crate) async fn moved_triggers(
        conn: &mut DB::Connection,
        triggers: &[TriggerRow],
        now: Timestamp,
    ) -> Result<Vec<(String, Option<i64>)>> {
        let specs = triggers.iter().map(|t| t.spec()).collect::<Result<Vec<_>>>()?;
        let loaded = Self::calendars(conn, &calendar_names(&specs), false).await?;
        let mut moved = Vec::new();
        for (t, spec) in triggers.iter().zip(&specs) {
            let cals = calendars_of(spec, &loaded);
            let next = crate::schedule::next_fire_after_change(spec, t.next_fire_at.map(ts), now, &cals).map(us);
            if next != t.next_fire_at {
                moved.push((t.id.clone(), next));
            }
        }
        Ok(moved)
    }

    /// [`Store::calendar_delete`](super::Store::calendar_delete): the calendar is locked before
    /// the triggers are looked at, so none can come to name it meanwhile.
    pub(crate) async fn delete_calendar(conn: &mut DB::Connection, name: &str) -> Result<()> {
        let sql = format!("SELECT name FROM calendars WHERE name = $1{}", Self::for_update());
        let found: Option<(String,)> =
            sqlx::query_as(&sql).bind(name.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)?;
        if found.is_none() {
            return Err(StoreError::NotFound(format!("calendar {name}")));
        }
        let sql = format!("SELECT job_id FROM triggers WHERE {} LIMIT 1", DB::names_calendar("$1"));
        let user: Option<(String,)> =
            sqlx::query_as(&sql).bind(name.to_string()).fetch_optional(&mut *conn).await.map_err(DB::err)?;
        if let Some((job_id,)) = user {
            return Err(super::plan::calendar_in_use(name, &job_id));
        }
        let q = sqlx::query("DELETE FROM calendars WHERE name = $1").bind(name.to_string());
        q.execute(&mut *conn).await.map_err(DB::err)?;
        Ok(())
    }

    // ---- limits --------------------------------------------------------------------------

    /// [`Store::limit_put`](super::Store::limit_put).
    pub(crate) async fn upsert_limit(
        conn: &mut DB::Connection,
        key: &LimitKey,
        bounds: LimitBounds,
        now: Timestamp,
    ) -> Result<LimitDef> {
        let (max_running, rate_count, rate_per_us) = bound_columns(&bounds);
        let sql = format!(
            "INSERT INTO limits (key, pattern, max_running, rate_count, rate_per_us, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (key) DO UPDATE SET max_running = excluded.max_running, \
             rate_count = excluded.rate_count, rate_per_us = excluded.rate_per_us, updated_at = excluded.updated_at \
             RETURNING {LIMIT_COLUMNS}"
        );
        let row: LimitRow = sqlx::query_as(&sql)
            .bind(key.as_string())
            .bind(key.is_pattern())
            .bind(max_running)
            .bind(rate_count)
            .bind(rate_per_us)
            .bind(us(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(DB::err)?;
        row.into_def()
    }

    /// [`Store::limit_delete`](super::Store::limit_delete).
    pub(crate) async fn delete_limit(conn: &mut DB::Connection, key: &LimitKey) -> Result<()> {
        let q = sqlx::query("DELETE FROM limits WHERE key = $1").bind(key.as_string());
        match DB::changed(q.execute(&mut *conn).await.map_err(DB::err)?) {
            0 => Err(StoreError::NotFound(format!("limit {}", key.as_string()))),
            _ => Ok(()),
        }
    }
}
