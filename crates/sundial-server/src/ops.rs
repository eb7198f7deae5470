//! Operations endpoints: `/healthz`, `/readyz`, `/metrics` (Prometheus), `/openapi.json`, and
//! bearer-token auth for `/v1`.

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

/// Prometheus text; gauges are read from the store at scrape time.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(s) = state.store.stats(state.clock.now()).await {
        for st in sundial_core::domain::RunState::ALL {
            let n = s.runs_by_state.iter().find(|(x, _)| *x == st).map_or(0, |(_, n)| *n);
            metrics::gauge!("sundial_runs", "state" => st.as_str()).set(n as f64);
        }
        metrics::gauge!("sundial_runs_due").set(s.runs_due as f64);
        metrics::gauge!("sundial_runs_oldest_due_wait_seconds").set(s.oldest_due_wait_s);
        metrics::gauge!("sundial_jobs").set(s.jobs as f64);
        metrics::gauge!("sundial_triggers_active").set(s.triggers_active as f64);
        for (st, n) in s.workers_by_state {
            metrics::gauge!("sundial_workers", "state" => st.as_str()).set(n as f64);
        }
        metrics::gauge!("sundial_store_up").set(1.0);
    } else {
        metrics::gauge!("sundial_store_up").set(0.0);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
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
