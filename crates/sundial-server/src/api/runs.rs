//! `/v1/runs`: results. List (filters, cursor pagination), get, cancel.

use super::{ListResponse, Params};
use crate::body::IgnoredBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::Json;
use sundial_core::domain::{Run, RunState};
use sundial_core::store::RunFilter;

/// List runs, newest `scheduled_for` first. Filters: `job_id`, `state`, `since` (inclusive),
/// `until` (exclusive), `namespace`.
#[utoipa::path(get, path = "/v1/runs", responses((status = 200, body = ListResponse<Run>)))]
pub async fn list(State(state): State<AppState>, p: Params) -> ApiResult<Json<ListResponse<Run>>> {
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
        namespace: p.str("namespace"),
        limit: p.limit()?,
        cursor: p.str("cursor"),
    };
    let page = state.store.run_list(&filter).await?;
    Ok(Json(ListResponse { items: page.items, next_cursor: page.next_cursor }))
}

/// One run.
#[utoipa::path(get, path = "/v1/runs/{id}", responses((status = 200, body = Run), (status = 404)))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Run>> {
    Ok(Json(state.store.run_get(&id).await?))
}

/// Cancel: a pending run at once; a running one is told at its worker's next heartbeat.
#[utoipa::path(post, path = "/v1/runs/{id}/cancel", responses((status = 200, body = Run), (status = 409)))]
pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>, _b: IgnoredBody) -> ApiResult<Json<Run>> {
    let run = state.store.run_cancel(&id, state.clock.now()).await?;
    sundial_core::metrics::finished(&run);
    Ok(Json(run))
}
