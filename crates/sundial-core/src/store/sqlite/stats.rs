//! SQLite: the operating counts (the SQL is shared, in `store::counts`).

use super::*;

/// Live workers per handler they serve.
const WORKER_HANDLERS: &str =
    "SELECT h.value, COUNT(*) FROM workers w, json_each(w.handlers) h WHERE w.state = 'active' GROUP BY h.value";

/// [`Store::stats_runs`].
pub(super) async fn runs(s: &SqliteStore, q: &RunStatsQuery) -> Result<Vec<RunBucket>> {
    crate::store::counts::runs(&s.read, db_err, q).await
}

/// [`Store::stats_handlers`].
pub(super) async fn handlers(
    s: &SqliteStore,
    namespaces: Option<&[String]>,
    now: Timestamp,
) -> Result<Vec<HandlerQueue>> {
    crate::store::counts::handlers(&s.read, db_err, |c| format!("{c} = 0"), WORKER_HANDLERS, namespaces, now).await
}
