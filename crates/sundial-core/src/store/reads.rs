//! The simple reads (one job, run or worker by id; the worker and calendar lists; the next due
//! trigger and pending run; the stats and limit counts), written once for both backends: generic
//! over the database, with only the dialect's differences ([`Dialect`]) passed in. The paged lists
//! (`listing`) and the stats series (`counts`) are built with `QueryBuilder`, whose borrow of its
//! arguments a generic function cannot end in time: `store_by_noun!` runs them on each backend's
//! pool instead.

use super::limits::{defs_of, LimitRow, LIMIT_COLUMNS};
use super::plan::StatCounts;
use super::rows::{
    jobs_with_triggers, ts, us, AttemptRow, CalendarRow, JobRow, RunRow, TriggerRow, WorkerRow, ATTEMPT_COLUMNS,
    CALENDAR_COLUMNS, JOB_SELECT, RUN_COLUMNS, TRIGGER_COLUMNS, WORKER_SELECT,
};
use super::writes::Dialect;
use super::{Attempt, CalendarDef, Job, LimitDef, Result, Run, Stats, StoreError, Timestamp, Worker};
use sqlx::{Encode, Executor, FromRow, IntoArguments, Pool, Type};
use std::collections::HashMap;

/// The pool a backend reads from (SQLite: the readers, or the writer where a read must see the
/// last commit at once).
pub(crate) struct Reader<'a, DB: Dialect> {
    /// The pool the read runs on.
    pub pool: &'a Pool<DB>,
}

impl<'a, DB> Reader<'a, DB>
where
    DB: Dialect,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> JobRow: FromRow<'r, DB::Row>,
    for<'r> RunRow: FromRow<'r, DB::Row>,
    for<'r> WorkerRow: FromRow<'r, DB::Row>,
    for<'r> CalendarRow: FromRow<'r, DB::Row>,
    for<'r> TriggerRow: FromRow<'r, DB::Row>,
    for<'r> AttemptRow: FromRow<'r, DB::Row>,
    for<'r> LimitRow: FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, Option<i64>): FromRow<'r, DB::Row>,
    for<'r> (Option<i64>,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// [`Store::job_get`](super::Store::job_get).
    pub(crate) async fn job(&self, id: &str, now: Timestamp) -> Result<Job> {
        let sql = format!("{JOB_SELECT} WHERE j.id = $1");
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<JobRow> = q.fetch_optional(self.pool).await.map_err(DB::err)?;
        let row = row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))?;
        Ok(self.with_triggers(vec![row], now).await?.remove(0))
    }

    /// Jobs from their rows, with their triggers.
    pub(crate) async fn with_triggers(&self, rows: Vec<JobRow>, now: Timestamp) -> Result<Vec<Job>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let sql = format!(
            "SELECT {TRIGGER_COLUMNS} FROM triggers WHERE {} ORDER BY job_id, position",
            DB::in_list("job_id", "$1")
        );
        let q = sqlx::query_as(&sql).bind(DB::list(&ids));
        let triggers: Vec<TriggerRow> = q.fetch_all(self.pool).await.map_err(DB::err)?;
        jobs_with_triggers(rows, triggers, now)
    }

    /// [`Store::run_get`](super::Store::run_get).
    pub(crate) async fn run(&self, id: &str) -> Result<Run> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1");
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<RunRow> = q.fetch_optional(self.pool).await.map_err(DB::err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?.into_run()
    }

    /// [`Store::run_attempts`](super::Store::run_attempts).
    pub(crate) async fn attempts(&self, id: &str) -> Result<Vec<Attempt>> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM run_attempts WHERE run_id = $1 ORDER BY attempt");
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let rows: Vec<AttemptRow> = q.fetch_all(self.pool).await.map_err(DB::err)?;
        if rows.is_empty() {
            // Never claimed, or no such run.
            self.run(id).await?;
        }
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }

    /// [`Store::worker_get`](super::Store::worker_get).
    pub(crate) async fn worker(&self, id: &str) -> Result<Worker> {
        let sql = format!("{WORKER_SELECT} WHERE w.id = $1");
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<WorkerRow> = q.fetch_optional(self.pool).await.map_err(DB::err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?.into_worker()
    }

    /// [`Store::worker_list`](super::Store::worker_list).
    pub(crate) async fn workers(&self) -> Result<Vec<Worker>> {
        let sql = format!("{WORKER_SELECT} ORDER BY w.created_at DESC, w.id DESC");
        let rows: Vec<WorkerRow> = sqlx::query_as(&sql).fetch_all(self.pool).await.map_err(DB::err)?;
        rows.into_iter().map(WorkerRow::into_worker).collect()
    }

    /// [`Store::calendar_get`](super::Store::calendar_get).
    pub(crate) async fn calendar(&self, name: &str) -> Result<CalendarDef> {
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE name = $1");
        let q = sqlx::query_as(&sql).bind(name.to_string());
        let row: Option<CalendarRow> = q.fetch_optional(self.pool).await.map_err(DB::err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("calendar {name}")))?.into_def()
    }

    /// [`Store::calendar_list`](super::Store::calendar_list).
    pub(crate) async fn calendars(&self) -> Result<Vec<CalendarDef>> {
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars ORDER BY name");
        let rows: Vec<CalendarRow> = sqlx::query_as(&sql).fetch_all(self.pool).await.map_err(DB::err)?;
        rows.into_iter().map(CalendarRow::into_def).collect()
    }

    /// [`Store::trigger_next_due`](super::Store::trigger_next_due).
    pub(crate) async fn next_due(&self) -> Result<Option<Timestamp>> {
        let paused = DB::is_false("paused");
        let sql = format!("SELECT MIN(next_fire_at) FROM triggers WHERE {paused} AND next_fire_at IS NOT NULL");
        let (next,): (Option<i64>,) = sqlx::query_as(&sql).fetch_one(self.pool).await.map_err(DB::err)?;
        Ok(next.map(ts))
    }

    /// `state = 'pending'` and neither held nor blocked: a run a claim may take once due.
    fn ready(&self) -> String {
        format!("state = 'pending' AND {} AND {}", DB::is_false("held"), DB::is_false("blocked"))
    }

    /// [`Store::run_next_pending`](super::Store::run_next_pending).
    pub(crate) async fn next_pending(&self, after: Timestamp) -> Result<Option<Timestamp>> {
        let sql = format!("SELECT MIN(scheduled_for) FROM runs WHERE {} AND scheduled_for > $1", self.ready());
        let (next,): (Option<i64>,) =
            sqlx::query_as(&sql).bind(us(after)).fetch_one(self.pool).await.map_err(DB::err)?;
        Ok(next.map(ts))
    }

    /// [`Store::stats`](super::Store::stats).
    pub(crate) async fn stats(&self, now: Timestamp) -> Result<Stats> {
        let by_state = "SELECT state, COUNT(*) FROM runs GROUP BY state";
        let runs_by_state = sqlx::query_as(by_state).fetch_all(self.pool).await.map_err(DB::err)?;
        let due_sql =
            format!("SELECT COUNT(*), MIN(scheduled_for) FROM runs WHERE {} AND scheduled_for <= $1", self.ready());
        let due = sqlx::query_as(&due_sql).bind(us(now)).fetch_one(self.pool).await.map_err(DB::err)?;
        let count = |sql: &'static str| async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(self.pool).await.map_err(DB::err)?;
            Ok::<_, StoreError>(n)
        };
        let jobs = count("SELECT COUNT(*) FROM jobs").await?;
        let triggers = count("SELECT COUNT(*) FROM triggers WHERE next_fire_at IS NOT NULL").await?;
        let workers = "SELECT state, COUNT(*) FROM workers GROUP BY state";
        let workers_by_state = sqlx::query_as(workers).fetch_all(self.pool).await.map_err(DB::err)?;
        Ok(StatCounts { runs_by_state, due, jobs, triggers, workers_by_state }.into_stats(now))
    }

    /// [`Store::limit_defs`](super::Store::limit_defs).
    pub(crate) async fn limit_defs(&self) -> Result<Vec<LimitDef>> {
        let sql = format!("SELECT {LIMIT_COLUMNS} FROM limits");
        defs_of(sqlx::query_as(&sql).fetch_all(self.pool).await.map_err(DB::err)?)
    }

    /// [`Store::limit_running`](super::Store::limit_running).
    pub(crate) async fn limit_running(&self, keys: &[String]) -> Result<HashMap<String, u64>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT key, COUNT(*) FROM run_limits WHERE {} AND ended_at IS NULL GROUP BY key",
            DB::in_list("key", "$1")
        );
        let q = sqlx::query_as(&sql).bind(DB::list(keys));
        let rows: Vec<(String, i64)> = q.fetch_all(self.pool).await.map_err(DB::err)?;
        Ok(rows.into_iter().map(|(k, n)| (k, n.max(0) as u64)).collect())
    }
}
