//! `/v1/runs`: results. List (filters, cursor pagination), get, cancel, retry, attempts, and
//! bulk cancel/retry by filter.

use super::{ListResponse, Params};
use crate::auth::{Access, ListScope};
use crate::body::{IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use sundial_core::domain::{Attempt, Run, RunState, Timestamp};
use sundial_core::store::{RunFilter, StoreError};

/// List runs, newest `scheduled_for` first. Filters: `job_id`, `state`, `since` (inclusive),
/// `until` (exclusive), `namespace`, `handler`.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs",
    params(("job_id" = Option<String>, Query, description = "Only this job's runs"),
        ("state" = Option<String>, Query, description = "pending, running, succeeded, failed, timed_out, cancelled or skipped"),
        ("since" = Option<String>, Query, format = DateTime, description = "scheduled_for at or after (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "scheduled_for before (RFC 3339)"),
        ("namespace" = Option<String>, Query, description = "Only this namespace (narrowed to the token's)"),
        ("handler" = Option<String>, Query, description = "Only this handler"),
        ("limit" = Option<u32>, Query, description = "Page size, default 100; more than 1000 counts as 1000", minimum = 1),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Runs, newest scheduled_for first", body = ListResponse<Run>), (status = 422, description = "Bad query parameter", body = crate::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, access: Access, p: Params) -> ApiResult<Json<ListResponse<Run>>> {
    let scope = access.scope(p.str("namespace"));
    let (namespace, namespaces) = match scope {
        ListScope::AsAsked(ns) => (ns, None),
        ListScope::Empty => return Ok(Json(ListResponse { items: vec![], next_cursor: None })),
        ListScope::Filter(set) => (None, Some(set.into_iter().collect())),
    };
    let run_state = p
        .str("state")
        .map(|s| {
            RunState::parse(&s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "state: unknown run state {s:?}; expected pending, running, succeeded, failed, timed_out, cancelled or skipped"
                ))
            })
        })
        .transpose()?;
    let filter = RunFilter {
        job_id: p.str("job_id"),
        state: run_state,
        since: p.time("since")?,
        until: p.time("until")?,
        namespace,
        namespaces,
        handler: p.str("handler"),
        limit: p.limit()?,
        cursor: p.str("cursor"),
    };
    let page = state.store.run_list(&filter).await?;
    Ok(Json(ListResponse { items: page.items, next_cursor: page.next_cursor }))
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", operation_id = "get_run", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = Run), (status = 404, description = "Unknown id", body = crate::error::ErrorBody)))]
pub async fn get(State(state): State<AppState>, access: Access, Path(id): Path<String>) -> ApiResult<Json<Run>> {
    Ok(Json(visible_run(&state, &access, &id).await?))
}

/// The run `id`, if the caller may see its namespace; else the same 404 as an unknown id.
pub(crate) async fn visible_run(state: &AppState, access: &Access, id: &str) -> ApiResult<Run> {
    let run = state.store.run_get(id).await?;
    access.see(&run.namespace, || format!("run {id}"))?;
    Ok(run)
}

/// Cancel: a pending run at once; a running one is told at its worker's next heartbeat.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", operation_id = "cancel_run", tag = "runs", params(("id" = String, Path, description = "The run's id")),
    responses((status = 200, description = "The run", body = Run), (status = 404, description = "Unknown id", body = crate::error::ErrorBody),
        (status = 409, description = "Already finished (`already_finished`)", body = crate::error::ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    _b: IgnoredBody,
) -> ApiResult<Json<Run>> {
    visible_run(&state, &access, &id).await?;
    let run = state.store.run_cancel(&id, state.clock.now()).await?;
    sundial_core::metrics::finished(&run);
    Ok(Json(run))
}

/// Retry: a `failed`, `timed_out` or `cancelled` run goes back to `pending`, due now, with a
/// full set of attempts from its current one; any other state is 409 `not_retryable`.
#[utoipa::path(post, path = "/v1/runs/{id}/retry", operation_id = "retry_run",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = Run), (status = 404, description = "Unknown run"),
        (status = 409, description = "`not_retryable`: the run is not failed, timed_out or cancelled")))]
pub async fn retry(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    _b: IgnoredBody,
) -> ApiResult<Json<Run>> {
    visible_run(&state, &access, &id).await?;
    let run = state.store.run_retry(&id, state.clock.now()).await?;
    state.signals.runs_ready.notify_waiters();
    Ok(Json(run))
}

/// Every attempt of a run, oldest first: its worker, times, outcome and error.
#[utoipa::path(get, path = "/v1/runs/{id}/attempts", operation_id = "list_run_attempts",
    params(("id" = String, Path, description = "Run id")),
    responses((status = 200, body = ListResponse<Attempt>), (status = 404, description = "Unknown run")))]
pub async fn attempts(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
) -> ApiResult<Json<ListResponse<Attempt>>> {
    visible_run(&state, &access, &id).await?;
    let items = state.store.run_attempts(&id).await?;
    Ok(Json(ListResponse { items, next_cursor: None }))
}

/// `POST /v1/runs/bulk` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// `cancel` or `retry`.
    pub action: BulkAction,
    /// Which runs: every run matching all given fields; `{"all": true}` for every run.
    pub filter: BulkFilter,
}

/// What a bulk request does to each matching run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// As `POST /v1/runs/{id}/cancel`.
    Cancel,
    /// As `POST /v1/runs/{id}/retry`.
    Retry,
}

/// The runs a bulk request acts on (`since`/`until` on `scheduled_for`, as in `GET /v1/runs`).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkFilter {
    /// Every run (acting on everything must be said).
    #[serde(default)]
    pub all: bool,
    /// Only this job's runs.
    pub job_id: Option<String>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only this handler.
    pub handler: Option<String>,
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// `scheduled_for >= since`.
    #[schema(value_type = Option<String>)]
    pub since: Option<Timestamp>,
    /// `scheduled_for < until`.
    #[schema(value_type = Option<String>)]
    pub until: Option<Timestamp>,
}

/// `POST /v1/runs/bulk` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BulkResponse {
    /// Runs the filter matched.
    pub matched: u64,
    /// Runs whose state changed or that got `cancel_requested`.
    pub changed: u64,
}

/// Runs read per page while collecting a bulk request's matches.
const BULK_PAGE: u32 = 1000;
/// Runs acted on per store transaction: one commit per batch instead of one per run, while a
/// batch still holds its locks only briefly.
const BULK_BATCH: usize = 500;

/// Cancel or retry every run a filter matches (not one page). The matches are collected first,
/// then acted on in batches (one transaction per 500 runs), so runs the action moves are
/// neither missed nor met twice.
#[utoipa::path(post, path = "/v1/runs/bulk", operation_id = "bulk_runs", request_body = BulkRequest,
    responses((status = 200, body = BulkResponse), (status = 400, description = "Malformed JSON"),
        (status = 422, description = "Unknown action or an empty filter")))]
pub async fn bulk(
    State(state): State<AppState>,
    access: Access,
    JsonBody(req): JsonBody<BulkRequest>,
) -> ApiResult<Json<BulkResponse>> {
    let f = req.filter;
    let narrowed = f.job_id.is_some()
        || f.namespace.is_some()
        || f.handler.is_some()
        || f.state.is_some()
        || f.since.is_some()
        || f.until.is_some();
    if !narrowed && !f.all {
        return Err(ApiError::invalid(
            "filter: empty; give job_id, namespace, handler, state, since or until, or {\"all\": true} for every run",
        ));
    }
    // A namespace-bound token's filter is narrowed to its namespaces: others are never touched.
    let (namespace, namespaces) = match access.scope(f.namespace) {
        ListScope::AsAsked(ns) => (ns, None),
        ListScope::Empty => return Ok(Json(BulkResponse { matched: 0, changed: 0 })),
        ListScope::Filter(set) => (None, Some(set.into_iter().collect())),
    };
    let mut filter = RunFilter {
        job_id: f.job_id,
        state: f.state,
        since: f.since,
        until: f.until,
        namespace,
        namespaces,
        handler: f.handler,
        limit: BULK_PAGE,
        cursor: None,
    };
    let mut ids = Vec::new();
    loop {
        let page = state.store.run_list(&filter).await?;
        ids.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => filter.cursor = Some(c),
            None => break,
        }
    }
    let mut changed = 0;
    for batch in ids.chunks(BULK_BATCH) {
        let now = state.clock.now();
        let outcomes = match req.action {
            BulkAction::Cancel => state.store.run_cancel_many(batch, now).await?,
            BulkAction::Retry => state.store.run_retry_many(batch, now).await?,
        };
        for outcome in outcomes {
            match outcome {
                Ok(run) => {
                    if req.action == BulkAction::Cancel {
                        sundial_core::metrics::finished(&run);
                    }
                    changed += 1;
                }
                // Finished, retried or deleted meanwhile, or not a state the action applies to.
                Err(StoreError::AlreadyFinished(_) | StoreError::NotRetryable(_) | StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if req.action == BulkAction::Retry && changed > 0 {
        state.signals.runs_ready.notify_waiters();
    }
    Ok(Json(BulkResponse { matched: ids.len() as u64, changed }))
}
