//! PostgreSQL: the operating counts (the queries are shared, in `store::counts`).

use super::*;
use crate::store::counts::{finished_query, handler_runs_query, started_query};
use crate::store::plan::{handler_queues, run_buckets};

/// Live workers per handler they serve.
const WORKER_HANDLERS: &str = "SELECT h, COUNT(*) FROM workers w, json_array_elements_text(w.handlers::json) AS h \
     WHERE w.state = 'active' GROUP BY h";

/// [`Store::stats_runs`].
pub(super) async fn runs(s: &PostgresStore, f: &RunStatsQuery) -> Result<Vec<RunBucket>> {
    let finished = finished_query::<Postgres>(f).build_query_as().fetch_all(&s.pool).await.map_err(db_err)?;
    let started = started_query::<Postgres>(f).build_query_as().fetch_all(&s.pool).await.map_err(db_err)?;
    Ok(run_buckets(f, finished, started))
}

/// [`Store::stats_handlers`].
pub(super) async fn handlers(
    s: &PostgresStore,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> Result<Vec<HandlerQueue>> {
    let mut q = handler_runs_query::<Postgres>(|c| format!("NOT {c}"), namespaces, now);
    let runs = q.build_query_as().fetch_all(&s.pool).await.map_err(db_err)?;
    let workers = sqlx::query_as(WORKER_HANDLERS).fetch_all(&s.pool).await.map_err(db_err)?;
    Ok(handler_queues(runs, workers))
}
