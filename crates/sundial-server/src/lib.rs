//! sundial-server: the HTTP face of a sundial node.
//!
//! # Layout
//! * [`api`] — `/v1`: jobs, runs, the worker protocol and previews, one module each.
//! * [`body`], [`error`] — request parsing and the `{"error": {...}}` shape.
//! * [`batcher`] — group commit for submissions and completions.
//! * [`local`] — the in-process worker transport behind `serve --workers N`.
//! * [`auth`] — tokens, roles, namespaces: who may do what; [`limits`] — limits on input.
//! * [`ops`] — health, readiness; [`metrics`]; [`openapi`]; [`dashboard`].
//! * [`state`] — what every handler shares (store, clock, signals, batchers).
//! * [`node`] — starts one node: store, scheduler, reaper, HTTP, in-process workers.

pub mod api;
pub mod auth;
pub mod batcher;
pub mod body;
pub mod dashboard;
pub mod error;
pub mod limits;
pub mod local;
pub mod metrics;
pub mod node;
pub mod openapi;
pub mod ops;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
pub use state::{ApiConfig, AppState};

/// The router of a node.
pub fn app(state: AppState) -> Router {
    use api::calendars;
    let v1 = Router::new()
        .route("/jobs", post(api::jobs::create).get(api::jobs::list))
        .route("/jobs/batch", post(api::jobs::batch))
        .route("/jobs/{id}", get(api::jobs::get).patch(api::jobs::patch).delete(api::jobs::delete))
        .route("/jobs/{id}/pause", post(api::jobs::pause))
        .route("/jobs/{id}/resume", post(api::jobs::resume))
        .route("/jobs/{id}/run", post(api::jobs::run_now))
        .route("/jobs/{id}/fires", get(api::fires::job_fires))
        .route("/jobs/{id}/backfill", post(api::jobs::backfill))
        .route("/triggers/preview", post(api::fires::trigger_preview))
        .route("/runs", get(api::runs::list))
        .route("/runs/{id}", get(api::runs::get))
        .route("/runs/bulk", post(api::runs::bulk))
        .route("/runs/{id}/cancel", post(api::runs::cancel))
        .route("/runs/{id}/retry", post(api::runs::retry))
        .route("/runs/{id}/attempts", get(api::runs::attempts))
        .route("/runs/{id}/complete", post(api::workers::complete))
        .route("/workers", post(api::workers::register).get(api::workers::list))
        .route("/workers/{id}", delete(api::workers::deregister))
        .route("/workers/{id}/claim", post(api::workers::claim))
        .route("/workers/{id}/heartbeat", post(api::workers::heartbeat))
        .route("/stats/runs", get(api::stats::runs))
        .route("/stats/handlers", get(api::stats::handlers))
        .route("/limits", get(api::limits::list))
        .route("/limits/{key}", get(api::limits::get).put(api::limits::put).delete(api::limits::delete))
        .route("/calendars", get(calendars::list))
        .route("/calendars/{name}", get(calendars::get).put(calendars::put).delete(calendars::delete))
        .fallback(|| async { error::ApiError::not_found("route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/", get(dashboard::index))
        .route("/ui/{*path}", get(dashboard::asset))
        // After the routes, so the route template is known; unmatched paths are not counted.
        .route_layer(axum::middleware::from_fn(metrics::track_http))
        .fallback(|| async { error::ApiError::not_found("route") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .with_state(state)
}

/// 405 with the error body, for a method a route does not serve.
async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> error::ApiError {
    error::ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
