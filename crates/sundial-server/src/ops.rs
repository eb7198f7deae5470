//! Operations endpoints: `/healthz`, `/readyz`, and bearer-token auth for `/v1` (`/metrics` is
//! [`crate::metrics`]).

use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Process up.
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Store reachable: 200, else 503. Bounded, so a load balancer's probe never hangs on a
/// database that is down (the pool would otherwise keep retrying its connect).
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

/// With tokens configured, `/v1` needs `Authorization: Bearer <token>`.
pub async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.config.tokens.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if state.config.tokens.iter().any(|k| k == t) => next.run(req).await,
        Some(_) => {
            crate::error::ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "Authorization: unknown bearer token")
                .into_response()
        }
        None => crate::error::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization: a bearer token is required (Authorization: Bearer <token>)",
        )
        .into_response(),
    }
}
