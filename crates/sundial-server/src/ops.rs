//! Operations endpoints: `/healthz`, `/readyz` (`/metrics` is [`crate::metrics`]; access control
//! for `/v1` lives in [`crate::auth`]).

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Process up.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Store reachable: 200, else 503. Bounded, so a load balancer's probe never hangs on a
/// database that is down (the pool would otherwise keep retrying its connect).
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses((status = 200, description = "The store answers", body = Object),
        (status = 503, description = "The store is unreachable (`store_unavailable`)", body = crate::error::ErrorBody)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let unavailable = |m: String| {
        crate::error::ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", m).into_response()
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Json(serde_json::json!({"status": "ready"})).into_response(),
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(_) => unavailable("store did not answer within 2s".into()),
    }
}
