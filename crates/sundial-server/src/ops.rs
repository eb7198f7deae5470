//! Operations endpoints: `/healthz`, `/readyz`, `/metrics` (Prometheus). (Access control for
//! `/v1` lives in [`crate::auth`].)

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// The process-wide Prometheus recorder (a process has one metrics recorder).
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

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

/// Prometheus text; gauges are read from the store at scrape time.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
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
