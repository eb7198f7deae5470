//! The simple reads (one job, run or worker by id; the worker list; the next due trigger and
//! pending run; the stats counts), written once for both backends: generic over the database,
//! with only the dialect's differences ([`Reader`]'s fields) passed in. The paged lists are in
//! `listing`.

use super::plan::StatCounts;
use super::rows::{
    ts, us, CalendarRow, JobRow, RunRow, WorkerRow, CALENDAR_COLUMNS, JOB_SELECT, RUN_COLUMNS, WORKER_SELECT,
};
use super::{CalendarDef, Result, Run, Stats, StoreError, Timestamp, Worker};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

/// Where a backend reads from and how its dialect differs.
pub(crate) struct Reader<'a, DB: Database> {
    /// The pool the read runs on.
    pub pool: &'a Pool<DB>,
    /// The backend's driver-error mapping.
    pub err: fn(sqlx::Error) -> StoreError,
    /// The first bind parameter (`?`, `$1`).
    pub param1: &'static str,
    /// "This boolean column is false", written as the backend's partial indexes are (SQLite
    /// `c = 0`, PostgreSQL `NOT c`) so the planner uses them.
    pub is_false: fn(&str) -> String,
}

impl<'a, DB> Reader<'a, DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> JobRow: FromRow<'r, DB::Row>,
    for<'r> RunRow: FromRow<'r, DB::Row>,
    for<'r> WorkerRow: FromRow<'r, DB::Row>,
    for<'r> CalendarRow: FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, Option<i64>): FromRow<'r, DB::Row>,
    for<'r> (Option<i64>,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    /// One job row, by id (its triggers are the backend's to attach).
    pub(crate) async fn job_row(&self, id: &str) -> Result<JobRow> {
        let sql = format!("{JOB_SELECT} WHERE j.id = {}", self.param1);
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<JobRow> = q.fetch_optional(self.pool).await.map_err(self.err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    /// [`Store::run_get`](super::Store::run_get).
    pub(crate) async fn run(&self, id: &str) -> Result<Run> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = {}", self.param1);
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<RunRow> = q.fetch_optional(self.pool).await.map_err(self.err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("run {id}")))?.into_run()
    }

    /// [`Store::worker_get`](super::Store::worker_get).
    pub(crate) async fn worker(&self, id: &str) -> Result<Worker> {
        let sql = format!("{WORKER_SELECT} WHERE w.id = {}", self.param1);
        let q = sqlx::query_as(&sql).bind(id.to_string());
        let row: Option<WorkerRow> = q.fetch_optional(self.pool).await.map_err(self.err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("worker {id}")))?.into_worker()
    }

    /// [`Store::worker_list`](super::Store::worker_list).
    pub(crate) async fn workers(&self) -> Result<Vec<Worker>> {
        let sql = format!("{WORKER_SELECT} ORDER BY w.created_at DESC, w.id DESC");
        let rows: Vec<WorkerRow> = sqlx::query_as(&sql).fetch_all(self.pool).await.map_err(self.err)?;
        rows.into_iter().map(WorkerRow::into_worker).collect()
    }

    /// [`Store::calendar_get`](super::Store::calendar_get).
    pub(crate) async fn calendar(&self, name: &str) -> Result<CalendarDef> {
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars WHERE name = {}", self.param1);
        let q = sqlx::query_as(&sql).bind(name.to_string());
        let row: Option<CalendarRow> = q.fetch_optional(self.pool).await.map_err(self.err)?;
        row.ok_or_else(|| StoreError::NotFound(format!("calendar {name}")))?.into_def()
    }

    /// [`Store::calendar_list`](super::Store::calendar_list).
    pub(crate) async fn calendars(&self) -> Result<Vec<CalendarDef>> {
        let sql = format!("SELECT {CALENDAR_COLUMNS} FROM calendars ORDER BY name");
        let rows: Vec<CalendarRow> = sqlx::query_as(&sql).fetch_all(self.pool).await.map_err(self.err)?;
        rows.into_iter().map(CalendarRow::into_def).collect()
    }

    /// [`Store::trigger_next_due`](super::Store::trigger_next_due).
    pub(crate) async fn next_due(&self) -> Result<Option<Timestamp>> {
        let paused = (self.is_false)("paused");
        let sql = format!("SELECT MIN(next_fire_at) FROM triggers WHERE {paused} AND next_fire_at IS NOT NULL");
        let (next,): (Option<i64>,) = sqlx::query_as(&sql).fetch_one(self.pool).await.map_err(self.err)?;
        Ok(next.map(ts))
    }

    /// `state = 'pending'` and neither held nor blocked: a run a claim may take once due.
    fn ready(&self) -> String {
        format!("state = 'pending' AND {} AND {}", (self.is_false)("held"), (self.is_false)("blocked"))
    }

    /// [`Store::run_next_pending`](super::Store::run_next_pending).
    pub(crate) async fn next_pending(&self) -> Result<Option<Timestamp>> {
        let sql = format!("SELECT MIN(scheduled_for) FROM runs WHERE {}", self.ready());
        let (next,): (Option<i64>,) = sqlx::query_as(&sql).fetch_one(self.pool).await.map_err(self.err)?;
        Ok(next.map(ts))
    }

    /// [`Store::stats`](super::Store::stats).
    pub(crate) async fn stats(&self, now: Timestamp) -> Result<Stats> {
        let by_state = "SELECT state, COUNT(*) FROM runs GROUP BY state";
        let runs_by_state = sqlx::query_as(by_state).fetch_all(self.pool).await.map_err(self.err)?;
        let due_sql = format!(
            "SELECT COUNT(*), MIN(scheduled_for) FROM runs WHERE {} AND scheduled_for <= {}",
            self.ready(),
            self.param1
        );
        let due = sqlx::query_as(&due_sql).bind(us(now)).fetch_one(self.pool).await.map_err(self.err)?;
        let count = |sql: &'static str| async move {
            let (n,): (i64,) = sqlx::query_as(sql).fetch_one(self.pool).await.map_err(self.err)?;
            Ok::<_, StoreError>(n)
        };
        let jobs = count("SELECT COUNT(*) FROM jobs").await?;
        let triggers = count("SELECT COUNT(*) FROM triggers WHERE next_fire_at IS NOT NULL").await?;
        let workers = "SELECT state, COUNT(*) FROM workers GROUP BY state";
        let workers_by_state = sqlx::query_as(workers).fetch_all(self.pool).await.map_err(self.err)?;
        Ok(StatCounts { runs_by_state, due, jobs, triggers, workers_by_state }.into_stats(now))
    }
}
