//! `/v1/stats`: operating counts for the dashboard and operators — runs per time bucket
//! (finished by state, started, due → start lag) and each handler's queue. Both are narrowed to
//! the token's namespaces; the counting is the store's (one grouped query each).

use super::{ListResponse, Params};
use crate::auth::{Access, ListScope};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use std::time::Duration;
use sundial_core::domain::{HandlerQueue, RunBucket};
use sundial_core::store::{JobFilter, RunStatsQuery, StatsWindowError, MAX_STAT_BUCKETS};

/// The window when `since` is not given: the hour before `until`.
const DEFAULT_SPAN: Duration = Duration::from_secs(3600);
/// The bucket length when `step` is not given.
const DEFAULT_STEP: Duration = Duration::from_secs(60);

/// The namespaces a stats query counts: `None` for all; an empty list when the asked one is
/// hidden from the token.
fn namespaces(access: &Access, asked: Option<String>) -> Option<Vec<String>> {
    match access.scope(asked) {
        ListScope::AsAsked(ns) => ns.map(|n| vec![n]),
        ListScope::Empty => Some(Vec::new()),
        ListScope::Filter(set) => Some(set.into_iter().collect()),
    }
}

/// `step`: a humantime duration of at least a second, default a minute.
fn step(p: &Params) -> Result<Duration, ApiError> {
    let Some(v) = p.str("step") else { return Ok(DEFAULT_STEP) };
    let d = humantime::parse_duration(&v)
        .map_err(|e| ApiError::invalid(format!("step: expected a duration such as \"1m\", got {v:?} ({e})")))?;
    if d < Duration::from_secs(1) {
        return Err(ApiError::invalid(format!("step: must be at least 1s, got {v:?}")));
    }
    Ok(d)
}

/// Runs per time bucket: runs that finished in it by state, attempts that started (claims) in
/// it and the due → start lag of those starts (nearest-rank p50 and p99, whole milliseconds;
/// null without starts). Buckets are dense, oldest first, each `t` a multiple of `step` since
/// the Unix epoch, from the bucket holding `since` to the one holding the instant before
/// `until`; at most 1,440 of them.
#[utoipa::path(get, path = "/v1/stats/runs", operation_id = "stats_runs", tag = "stats",
    params(("since" = Option<String>, Query, format = DateTime, description = "RFC 3339; default an hour before `until`"),
        ("until" = Option<String>, Query, format = DateTime, description = "RFC 3339, exclusive; default now"),
        ("step" = Option<String>, Query, description = "Bucket length, at least 1s (humantime, default `1m`); at most 1,440 buckets"),
        ("namespace" = Option<String>, Query, description = "Only this namespace (narrowed to the token's)"),
        ("job_id" = Option<String>, Query, description = "Only this job's runs: its id or namespace/name"),
        ("handler" = Option<String>, Query, description = "Only this handler's runs")),
    responses((status = 200, description = "Dense buckets, oldest first", body = ListResponse<RunBucket>),
        (status = 422, description = "Bad time or step, `until` not after `since`, or more than 1,440 buckets", body = crate::error::ErrorBody)))]
pub async fn runs(
    State(state): State<AppState>,
    access: Access,
    p: Params,
) -> ApiResult<Json<ListResponse<RunBucket>>> {
    let until = p.time("until")?.unwrap_or_else(|| state.clock.now());
    let since = match p.time("since")? {
        Some(s) => s,
        None => until - chrono::TimeDelta::from_std(DEFAULT_SPAN).expect("an hour fits"),
    };
    let step = step(&p)?;
    let (from, buckets) = RunStatsQuery::window(since, until, step).map_err(|e| match e {
        StatsWindowError::ZeroStep => ApiError::invalid("step: must be at least 1s"),
        StatsWindowError::Empty => ApiError::invalid("until: must be after since"),
        StatsWindowError::TooMany(n) => ApiError::invalid(format!(
            "step: since to until in steps of {} is {n} buckets; at most {MAX_STAT_BUCKETS} (give a longer step or a shorter range)",
            humantime::format_duration(step)
        )),
    })?;
    let mut q = RunStatsQuery {
        from,
        step,
        buckets,
        namespaces: namespaces(&access, p.str("namespace")),
        job_id: p.str("job_id"),
        handler: p.str("handler"),
    };
    // A job named `namespace/name` is counted by its id; an unknown name matches no run.
    if let Some((ns, name)) = q.job_id.clone().as_deref().and_then(|j| j.split_once('/')) {
        let f = JobFilter { namespace: Some(ns.into()), name: Some(name.into()), limit: 1, ..Default::default() };
        let page = state.store.job_list(&f, state.clock.now()).await?;
        match page.items.into_iter().next() {
            Some(job) => q.job_id = Some(job.id),
            None => q.namespaces = Some(Vec::new()),
        }
    }
    let items = state.store.stats_runs(&q).await?;
    Ok(Json(ListResponse { items, next_cursor: None }))
}

/// Each handler's queue: every handler with a pending or running run (in the token's
/// namespaces) or a live worker, by name. A paused job's pending runs count in `pending`, not in
/// `due`; `workers` counts live worker processes serving the handler (0: nobody will run these).
#[utoipa::path(get, path = "/v1/stats/handlers", operation_id = "stats_handlers", tag = "stats",
    responses((status = 200, description = "Handlers by name", body = ListResponse<HandlerQueue>)))]
pub async fn handlers(State(state): State<AppState>, access: Access) -> ApiResult<Json<ListResponse<HandlerQueue>>> {
    let namespaces = namespaces(&access, None);
    let items = state.store.stats_handlers(namespaces.as_deref(), state.clock.now()).await?;
    Ok(Json(ListResponse { items, next_cursor: None }))
}
