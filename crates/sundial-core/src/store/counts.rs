//! The operating counts (`GET /v1/stats/runs`, `GET /v1/stats/handlers`), written once for both
//! backends: `QueryBuilder` is generic over the database, and the dialect's differences (how a
//! boolean is false, how a worker's handler list is unnested) are passed in. Each backend runs
//! these queries and hands the rows to `plan::run_buckets` and `plan::handler_queues`.
//!
//! Cost is bounded by the database, not by what is sent back: each query is one `GROUP BY`
//! whose answer has at most a few rows per bucket (runs per bucket and state; the starts' count
//! and two ranks per bucket) or per handler. The lag percentiles are ranked in SQL with window
//! functions (both dialects have them), so the lags themselves never leave the database; the
//! scans read the finished runs and the attempts of the window through their time indexes
//! (`runs_finished`, `run_attempts_started`) and the active runs through `runs_active_handler`.

use super::listing::in_namespaces;
use super::rows::{dur_us, us};
use super::{RunStatsQuery, Timestamp};
use sqlx::{Database, Encode, QueryBuilder, Type};

/// Nearest-rank percentiles: the `p`-th of `n` sorted values is the one at rank ⌈p·n/100⌉.
fn rank_sql(p: u32) -> String {
    format!("({p} * n + 99) / 100")
}

/// The first instant and the end of a stats query's window, and its step, in microseconds.
fn bounds(f: &RunStatsQuery) -> (i64, i64, i64) {
    let (from, step) = (us(f.from), dur_us(f.step).max(1));
    (from, from.saturating_add(step.saturating_mul(i64::from(f.buckets))), step)
}

/// The filters of a stats query on the `runs` row aliased `r`.
fn push_filters<'a, DB: Database>(q: &mut QueryBuilder<'a, DB>, f: &RunStatsQuery)
where
    String: Encode<'a, DB> + Type<DB>,
{
    in_namespaces(q, "r.namespace", f.namespaces.as_deref());
    if let Some(j) = &f.job_id {
        q.push(" AND r.job_id = ").push_bind(j.clone());
    }
    if let Some(h) = &f.handler {
        q.push(" AND r.handler = ").push_bind(h.clone());
    }
}

/// `(bucket, state, count)` of the runs that finished in the window. Buckets count from the
/// window's start (never negative, so integer division floors).
pub(crate) fn finished_query<'a, DB: Database>(f: &RunStatsQuery) -> QueryBuilder<'a, DB>
where
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let (from, until, step) = bounds(f);
    let mut q = QueryBuilder::<DB>::new("SELECT (r.finished_at - ");
    q.push_bind(from).push(") / ").push_bind(step);
    q.push(" AS b, r.state, COUNT(*) FROM runs r WHERE r.finished_at >= ").push_bind(from);
    q.push(" AND r.finished_at < ").push_bind(until);
    push_filters(&mut q, f);
    q.push(" GROUP BY 1, 2");
    q
}

/// `(bucket, starts, p50 lag, p99 lag)` of the attempts started in the window, lags in µs. The
/// lag is measured from the due time the attempt was claimed at (`due_at`, recorded by the
/// claim; attempts from before it was recorded fall back to the run's `scheduled_for`).
pub(crate) fn started_query<'a, DB: Database>(f: &RunStatsQuery) -> QueryBuilder<'a, DB>
where
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let (from, until, step) = bounds(f);
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
    q
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

/// `(handler, pending, due, running, oldest due)` of the active runs in `namespaces` (`None`:
/// all). `is_false` writes "this boolean column is false" in the dialect.
pub(crate) fn handler_runs_query<'a, DB: Database>(
    is_false: fn(&str) -> String,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> QueryBuilder<'a, DB>
where
    String: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut q = QueryBuilder::<DB>::new(
        "SELECT r.handler, SUM(CASE WHEN r.state = 'pending' THEN 1 ELSE 0 END), SUM(CASE WHEN ",
    );
    push_due(&mut q, is_false, now);
    q.push(" THEN 1 ELSE 0 END), SUM(CASE WHEN r.state = 'running' THEN 1 ELSE 0 END), MIN(CASE WHEN ");
    push_due(&mut q, is_false, now);
    q.push(" THEN r.scheduled_for END) FROM runs r WHERE r.state IN ('pending', 'running')");
    in_namespaces(&mut q, "r.namespace", namespaces);
    q.push(" GROUP BY r.handler");
    q
}
