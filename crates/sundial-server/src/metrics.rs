//! `/metrics`: the process's Prometheus recorder, the HTTP request metrics, the gauges read
//! from the store at scrape time, and the `# HELP`/`# TYPE` lines of families that have no
//! series yet (so a fresh node lists every family of [`sundial_core::metrics::FAMILIES`]).

use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::OnceLock;
use sundial_core::domain::{RunState, WorkerState};
use sundial_core::metrics::{Kind, FAMILIES};

/// Bucket bounds (seconds) of the duration histograms: from a fast HTTP answer to an hour-long run.
const BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// Bucket bounds of the size histograms (items per transaction).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// The process-wide Prometheus recorder (a process has one metrics recorder), with every
/// sundial family described.
pub fn prometheus_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for f in FAMILIES.iter().filter(|f| f.kind == Kind::Histogram) {
                let buckets = if f.name.ends_with("_seconds") { BUCKETS } else { SIZE_BUCKETS };
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(f.name.to_string()), buckets)
                    .expect("bucket list is not empty");
            }
            let handle = match builder.install_recorder() {
                Ok(h) => h,
                // Another recorder is installed (several nodes in one test process): render ours.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            sundial_core::metrics::describe_all();
            handle
        })
        .clone()
}

/// Counts each answered request by its route template (`/v1/jobs/{id}`, not the id) and status.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!("sundial_http_request_duration_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("sundial_http_requests_total", "route" => route, "status" => status).increment(1);
    resp
}

/// `GET /metrics`: Prometheus text; gauges are read from the store at scrape time.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    match state.store.stats(now).await {
        Ok(s) => {
            for st in RunState::ALL {
                let n = s.runs_by_state.iter().find(|(x, _)| *x == st).map_or(0, |(_, n)| *n);
                metrics::gauge!("sundial_runs", "state" => st.as_str()).set(n as f64);
            }
            metrics::gauge!("sundial_runs_due").set(s.runs_due as f64);
            metrics::gauge!("sundial_runs_oldest_due_wait_seconds").set(s.oldest_due_wait_s);
            metrics::gauge!("sundial_jobs").set(s.jobs as f64);
            metrics::gauge!("sundial_triggers_active").set(s.triggers_active as f64);
            if let Ok(defs) = state.store.limit_defs().await {
                metrics::gauge!("sundial_limits").set(defs.len() as f64);
            }
            for st in [WorkerState::Active, WorkerState::Draining, WorkerState::Dead] {
                let n = s.workers_by_state.iter().find(|(x, _)| *x == st).map_or(0, |(_, n)| *n);
                metrics::gauge!("sundial_workers", "state" => st.as_str()).set(n as f64);
            }
            metrics::gauge!("sundial_store_up").set(1.0);
        }
        Err(_) => {
            sundial_core::metrics::store_error();
            metrics::gauge!("sundial_store_up").set(0.0);
        }
    }
    if let Ok(counts) = pending_by_handler(&state).await {
        for (handler, n) in counts {
            metrics::gauge!("sundial_runs_pending", "handler" => handler).set(n as f64);
        }
    }
    let text = with_every_family(state.metrics.render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Pending runs per handler, from the store's grouped count (one `GROUP BY`, whatever the
/// backlog). Handlers seen before and now without pending runs read 0, so their series does
/// not freeze at the last count.
async fn pending_by_handler(state: &AppState) -> sundial_core::store::Result<Vec<(String, u64)>> {
    static SEEN: OnceLock<std::sync::Mutex<HashMap<String, u64>>> = OnceLock::new();
    let queues = state.store.stats_handlers(None, state.clock.now()).await?;
    let counts: HashMap<String, u64> = queues.into_iter().map(|q| (q.handler, q.pending)).collect();
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    for (h, n) in seen.iter_mut() {
        *n = counts.get(h).copied().unwrap_or(0);
    }
    for (h, n) in counts {
        seen.insert(h, n);
    }
    Ok(seen.iter().map(|(h, n)| (h.clone(), *n)).collect())
}

/// Adds `# HELP` and `# TYPE` for each catalogued family the recorder has no series of yet.
fn with_every_family(mut text: String) -> String {
    for f in FAMILIES {
        if !text.contains(&format!("# TYPE {} ", f.name)) {
            text.push_str(&format!("# HELP {} {}\n# TYPE {} {}\n\n", f.name, f.help, f.name, f.kind.as_str()));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_families_get_help_and_type_once() {
        let text = with_every_family("# TYPE sundial_limits gauge\nsundial_limits 0\n".into());
        assert_eq!(text.matches("# TYPE sundial_limits ").count(), 1);
        assert!(text.contains("# HELP sundial_run_start_lag_seconds "));
        assert!(text.contains("# TYPE sundial_run_start_lag_seconds histogram\n"));
    }
}
