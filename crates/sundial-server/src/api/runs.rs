//! `/v1/runs`: results. List (filters, cursor pagination), get, cancel.

use super::{ListResponse, Params};
use crate::auth::{Access, ListScope};
use crate::body::IgnoredBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use sundial_core::domain::{Run, RunState};
use sundial_core::store::RunFilter;

/// List runs, newest `scheduled_for` first. Filters: `job_id`, `state`, `since` (inclusive),
/// `until` (exclusive), `namespace`.
#[utoipa::path(get, path = "/v1/runs", operation_id = "list_runs", tag = "runs",
    params(("job_id" = Option<String>, Query, description = "Only this job's runs"),
        ("state" = Option<String>, Query, description = "pending, running, succeeded, failed, timed_out, cancelled or skipped"),
        ("since" = Option<String>, Query, format = DateTime, description = "scheduled_for at or after (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "scheduled_for before (RFC 3339)"),
        ("namespace" = Option<String>, Query, description = "Only this namespace (narrowed to the token's)"),
        ("limit" = Option<u32>, Query, description = "Page size, default 100, at most 1000", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Runs, newest scheduled_for first", body = ListResponse<Run>), (status = 422, description = "Bad query parameter", body = crate::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, access: Access, p: Params) -> ApiResult<Json<ListResponse<Run>>> {
    let scope = access.scope(p.str("namespace"));
    let namespace = match &scope {
        ListScope::AsAsked(ns) => ns.clone(),
        ListScope::Empty => return Ok(Json(ListResponse { items: vec![], next_cursor: None })),
        ListScope::Filter(_) => None,
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
        limit: p.limit()?,
        cursor: p.str("cursor"),
    };
    let mut page = state.store.run_list(&filter).await?;
    if let ListScope::Filter(set) = &scope {
        // RunFilter takes one namespace: narrow the page here (pages may come out short).
        page.items.retain(|r| set.contains(&r.namespace));
    }
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
