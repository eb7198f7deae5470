//! The operating counts (`GET /v1/stats/runs`, `GET /v1/stats/handlers`), written once for both
//! backends: `QueryBuilder` is generic over the database, and the dialect's differences (how a
//! boolean is false, how a worker's handler list is unnested) are passed in.
//!
//! Cost is bounded by the database, not by what is sent back: each query is one `GROUP BY`
//! whose answer has at most a few rows per bucket (runs per bucket and state; the starts' count
//! and two ranks per bucket) or per handler. The lag percentiles are ranked in SQL with window
//! functions (both dialects have them), so the lags themselves never leave the database; the
//! scans read the finished runs and the attempts of the window through their time indexes
//! (`runs_finished`, `run_attempts_started`) and the active runs through `runs_active_handler`.

use super::plan::{handler_queues, run_buckets};
use super::rows::{dur_us, us};
use super::{HandlerQueue, Result, RunBucket, RunStatsQuery, StoreError, Timestamp};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};

/// Nearest-rank percentiles: the `p`-th of `n` sorted values is the one at rank ⌈p·n/100⌉.
fn rank_sql(p: u32) -> String {
    format!("({p} * n + 99) / 100")
}

/// ` AND <column> IN (…)` for a namespace list (`None`: every namespace; empty: none).
fn push_namespaces<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, column: &str, namespaces: Option<&[String]>)
where
    String: Encode<'a, DB> + Type<DB>,
{
    match namespaces {
        None => {}
        Some([]) => {
            q.push(" AND 1 = 0");
        }
        Some(list) => {
            q.push(format!(" AND {column} IN ("));
            let mut sep = q.separated(", ");
            for ns in list {
                sep.push_bind(ns.clone());
            }
            q.push(")");
        }
    }
}

/// The filters of a stats query on the `runs` row aliased `r`.
fn push_filters<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, f: &RunStatsQuery)
where
    String: Encode<'a, DB> + Type<DB>,
{
    push_namespaces(q, "r.namespace", f.namespaces.as_deref());
    if let Some(j) = &f.job_id {
        q.push(" AND r.job_id = ").push_bind(j.clone());
    }
    if let Some(h) = &f.handler {
        q.push(" AND r.handler = ").push_bind(h.clone());
    }
}

/// [`Store::stats_runs`](super::Store::stats_runs) on `pool`.
pub(crate) async fn runs<DB>(
    pool: &Pool<DB>,
    err: fn(sqlx::Error) -> StoreError,
    f: &RunStatsQuery,
) -> Result<Vec<RunBucket>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (i64, String, i64): FromRow<'r, DB::Row>,
    for<'r> (i64, i64, Option<i64>, Option<i64>): FromRow<'r, DB::Row>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let (from, step) = (us(f.from), dur_us(f.step).max(1));
    let until = from.saturating_add(step.saturating_mul(i64::from(f.buckets)));
    // Bucket numbers count from `from` (never negative, so integer division floors).
    let mut q = QueryBuilder::<DB>::new("SELECT (r.finished_at - ");
    q.push_bind(from).push(") / ").push_bind(step);
    q.push(" AS b, r.state, COUNT(*) FROM runs r WHERE r.finished_at >= ").push_bind(from);
    q.push(" AND r.finished_at < ").push_bind(until);
    push_filters(&mut q, f);
    q.push(" GROUP BY 1, 2");
    let finished: Vec<(i64, String, i64)> = q.build_query_as().fetch_all(pool).await.map_err(err)?;

    // The lag is measured against the due time the attempt was claimed at (`due_at`, recorded by
    // the claim; attempts from before it was recorded fall back to the run's `scheduled_for`).
    let mut q = QueryBuilder::<DB>::new("WITH s AS (SELECT (a.started_at - ");
    q.push_bind(from).push(") / ").push_bind(step);
    q.push(
        " AS b, a.started_at - COALESCE(a.due_at, r.scheduled_for) AS lag FROM run_attempts a \
         JOIN runs r ON r.id = a.run_id WHERE a.started_at >= ",
    )
    .push_bind(from);
    q.push(" AND a.started_at < ").push_bind(until);
    push_filters(&mut q, f);
    q.push(format!(
        "), ranked AS (SELECT b, lag, ROW_NUMBER() OVER (PARTITION BY b ORDER BY lag) AS rn, \
         COUNT(*) OVER (PARTITION BY b) AS n FROM s) \
         SELECT b, n, MAX(CASE WHEN rn = {} THEN lag END), MAX(CASE WHEN rn = {} THEN lag END) \
         FROM ranked GROUP BY b, n",
        rank_sql(50),
        rank_sql(99)
    ));
    let started: Vec<(i64, i64, Option<i64>, Option<i64>)> = q.build_query_as().fetch_all(pool).await.map_err(err)?;
    Ok(run_buckets(f, finished, started))
}

/// "The run `r` is due": what a claim could take at `now` (a paused job's runs are `held`, a
/// `buffer_one` job's waiting run `blocked`); runs a limit holds back are due all the same.
fn push_due<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, is_false: fn(&str) -> String, now: Timestamp)
where
    i64: Encode<'a, DB> + Type<DB>,
{
    q.push(format!(
        "r.state = 'pending' AND {} AND {} AND r.scheduled_for <= ",
        is_false("r.held"),
        is_false("r.blocked")
    ))
    .push_bind(us(now));
}

/// [`Store::stats_handlers`](super::Store::stats_handlers) on `pool`. `is_false` writes "this
/// boolean column is false" in the dialect; `worker_handlers` is a query of `(handler, count)`
/// over the live workers, one row per handler.
pub(crate) async fn handlers<DB>(
    pool: &Pool<DB>,
    err: fn(sqlx::Error) -> StoreError,
    is_false: fn(&str) -> String,
    worker_handlers: &str,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> Result<Vec<HandlerQueue>>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'r> (String, i64, i64, i64, Option<i64>): FromRow<'r, DB::Row>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(
        "SELECT r.handler, SUM(CASE WHEN r.state = 'pending' THEN 1 ELSE 0 END), SUM(CASE WHEN ",
    );
    push_due(&mut q, is_false, now);
    q.push(" THEN 1 ELSE 0 END), SUM(CASE WHEN r.state = 'running' THEN 1 ELSE 0 END), MIN(CASE WHEN ");
    push_due(&mut q, is_false, now);
    q.push(" THEN r.scheduled_for END) FROM runs r WHERE r.state IN ('pending', 'running')");
    push_namespaces(&mut q, "r.namespace", namespaces);
    q.push(" GROUP BY r.handler");
    let runs: Vec<(String, i64, i64, i64, Option<i64>)> = q.build_query_as().fetch_all(pool).await.map_err(err)?;
    let workers: Vec<(String, i64)> = sqlx::query_as(worker_handlers).fetch_all(pool).await.map_err(err)?;
    Ok(handler_queues(runs, workers))
}
