//! PostgreSQL: the operating counts (the SQL is shared, in `store::counts`).

use super::*;

/// Live workers per handler they serve.
const WORKER_HANDLERS: &str = "SELECT h, COUNT(*) FROM workers w, json_array_elements_text(w.handlers::json) AS h \
     WHERE w.state = 'active' GROUP BY h";

/// [`Store::stats_runs`].
pub(super) async fn runs(s: &PostgresStore, q: &RunStatsQuery) -> Result<Vec<RunBucket>> {
    crate::store::counts::runs(&s.pool, db_err, q).await
}

/// [`Store::stats_handlers`].
pub(super) async fn handlers(
    s: &PostgresStore,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> Result<Vec<HandlerQueue>> {
    crate::store::counts::handlers(&s.pool, db_err, |c| format!("NOT {c}"), WORKER_HANDLERS, namespaces, now).await
}
