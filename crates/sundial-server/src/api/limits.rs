//! `/v1/limits`: flow-control limits per key (API.md "Flow control: limits per key").
//!
//! A `/` in a key travels as `%2F`; axum's path extractor decodes it, so `{key}` is one segment.

use super::ListResponse;
use crate::body::{IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use sundial_core::domain::limit::{governing, LimitRequest};
use sundial_core::domain::{Limit, LimitBounds, LimitKey};

/// Creates or replaces the limit under a key or pattern (`tenant:*`, `*`); a replace keeps
/// `created_at`.
#[utoipa::path(
    put,
    path = "/v1/limits/{key}",
    operation_id = "limits_put",
    params(("key" = String, Path, description = "A key, or a pattern ending in `*`; `/` as `%2F`")),
    request_body = LimitRequest,
    responses(
        (status = 200, body = Limit),
        (status = 400, description = "malformed JSON"),
        (status = 422, description = "bad key, both bounds null, or a bound below 1")
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Path(key): Path<String>,
    JsonBody(req): JsonBody<LimitRequest>,
) -> ApiResult<Json<Limit>> {
    let key = LimitKey::parse(&key)?;
    let bounds = LimitBounds::from_request(&req)?;
    let def = state.store.limit_put(&key, bounds, state.clock.now()).await?;
    let running = match &key {
        LimitKey::Exact(k) => running_of(&state, k).await?,
        LimitKey::Pattern(_) => None,
    };
    Ok(Json(Limit::view(&key.as_string(), &def, running)))
}

/// Every limit, by key; `running` counted for concrete keys, null on patterns.
#[utoipa::path(
    get,
    path = "/v1/limits",
    operation_id = "limits_list",
    responses((status = 200, body = ListResponse<Limit>))
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<ListResponse<Limit>>> {
    let mut defs = state.store.limit_defs().await?;
    defs.sort_by_key(|d| d.key.as_string());
    let exact: Vec<String> = defs
        .iter()
        .filter_map(|d| match &d.key {
            LimitKey::Exact(k) => Some(k.clone()),
            LimitKey::Pattern(_) => None,
        })
        .collect();
    let running = state.store.limit_running(&exact).await?;
    let items = defs
        .iter()
        .map(|d| {
            let key = d.key.as_string();
            let n = (!d.key.is_pattern()).then(|| running.get(&key).copied().unwrap_or(0));
            Limit::view(&key, d, n)
        })
        .collect();
    Ok(Json(ListResponse { items, next_cursor: None }))
}

/// One limit: a key's own, a pattern, or, for a concrete key that only a pattern governs, that
/// pattern's bounds with `pattern` set and `running` counted for the key alone.
#[utoipa::path(
    get,
    path = "/v1/limits/{key}",
    operation_id = "limits_get",
    params(("key" = String, Path, description = "A key, or a pattern ending in `*`; `/` as `%2F`")),
    responses(
        (status = 200, body = Limit),
        (status = 404, description = "no limit governs the key"),
        (status = 422, description = "bad key")
    )
)]
pub async fn get(State(state): State<AppState>, Path(key): Path<String>) -> ApiResult<Json<Limit>> {
    let parsed = LimitKey::parse(&key)?;
    let defs = state.store.limit_defs().await?;
    let not_found = || ApiError::not_found(format!("limit {key}"));
    match &parsed {
        LimitKey::Pattern(_) => {
            let def = defs.iter().find(|d| d.key == parsed).ok_or_else(not_found)?;
            Ok(Json(Limit::view(&key, def, None)))
        }
        LimitKey::Exact(k) => {
            let def = governing(&defs, k).ok_or_else(not_found)?;
            let running = running_of(&state, k).await?;
            Ok(Json(Limit::view(k, def, running)))
        }
    }
}

/// Deletes the limit under a key or pattern; runs it held become claimable.
#[utoipa::path(
    delete,
    path = "/v1/limits/{key}",
    operation_id = "limits_delete",
    params(("key" = String, Path, description = "A key, or a pattern ending in `*`; `/` as `%2F`")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no limit under this key"),
        (status = 422, description = "bad key")
    )
)]
pub async fn delete(State(state): State<AppState>, Path(key): Path<String>, _b: IgnoredBody) -> ApiResult<StatusCode> {
    let parsed = LimitKey::parse(&key)?;
    state.store.limit_delete(&parsed).await?;
    // Runs the limit held may be claimable now.
    state.signals.runs_ready.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

async fn running_of(state: &AppState, key: &str) -> ApiResult<Option<u64>> {
    let counts = state.store.limit_running(&[key.to_string()]).await?;
    Ok(Some(counts.get(key).copied().unwrap_or(0)))
}
