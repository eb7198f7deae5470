//! The worker protocol: register, claim (long-poll), heartbeat, complete (fenced), deregister,
//! and the workers list. The in-process pool reaches the same functions through
//! [`crate::local::LocalTransport`], so both paths share one implementation.

use crate::auth::{Access, Namespaces};
use crate::body::{IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::time::Duration;
use sundial_core::domain::{duration, Lease, Run, RunState, Worker};
use sundial_core::store::{ClaimedRun as StoreClaimed, Completion};
use sundial_worker::protocol::*;

/// Longest long-poll a claim may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// `POST /v1/workers` body (name and capacity optional).
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct RegisterBody {
    /// For humans; default `worker`.
    #[serde(default)]
    name: Option<String>,
    /// Handlers it serves (at least one).
    handlers: Vec<String>,
    /// Runs it takes at once; default 1.
    #[serde(default)]
    #[schema(minimum = 1)]
    capacity: Option<u32>,
}

/// Registers a worker whose claims lease only runs of `namespaces` (those of the token that
/// registered it).
pub(crate) async fn do_register(
    state: &AppState,
    req: RegisterRequest,
    namespaces: &Namespaces,
) -> ApiResult<Registered> {
    if req.handlers.is_empty() || req.handlers.iter().any(|h| h.trim().is_empty()) {
        return Err(ApiError::invalid("handlers: must list at least one non-empty handler name"));
    }
    if req.capacity == 0 {
        return Err(ApiError::invalid("capacity: must be at least 1"));
    }
    let only: Option<Vec<String>> = match namespaces {
        Namespaces::All => None,
        Namespaces::Only(set) => Some(set.iter().cloned().collect()),
    };
    let w =
        state.store.worker_register(&req.name, &req.handlers, req.capacity, only.as_deref(), state.clock.now()).await?;
    // Remembered here too, so this node's access checks need no store read.
    state.worker_namespaces.lock().unwrap_or_else(|e| e.into_inner()).insert(w.id.clone(), namespaces.clone());
    let lease = state.config.lease;
    Ok(Registered { id: w.id, lease: duration::format(lease), heartbeat_interval: duration::format(lease / 3) })
}

/// Checks that a remote caller may act as worker `id`: not this node's in-process pool (403
/// `in_process_worker`: it is not a remote worker and leaves only with its node), and registered
/// by a token whose namespaces the caller's cover (else 404, as for an unknown worker).
async fn remote_worker(state: &AppState, access: &Access, id: &str) -> ApiResult<Namespaces> {
    if state.local_workers.lock().await.contains(id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "in_process_worker",
            format!("worker {id} is this node's in-process pool, not a remote worker; it stops with its node"),
        ));
    }
    // The store keeps each worker's namespaces; this node remembers those it has seen.
    let known = state.worker_namespaces.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
    let owner = match known {
        Some(owner) => owner,
        None => {
            let w = state.store.worker_get(id).await?;
            let owner = match w.namespaces {
                None => Namespaces::All,
                Some(list) => Namespaces::Only(list.into_iter().collect()),
            };
            state.worker_namespaces.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), owner.clone());
            owner
        }
    };
    if !access.0.namespaces.covers(&owner) {
        return Err(ApiError::not_found(format!("worker {id}")));
    }
    Ok(owner)
}

/// Register a worker.
#[utoipa::path(post, path = "/v1/workers", operation_id = "register_worker", tag = "workers", request_body = RegisterBody,
    responses((status = 201, description = "Registered", body = Registered), (status = 422, description = "Invalid value", body = crate::error::ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    access: Access,
    JsonBody(b): JsonBody<RegisterBody>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let req = RegisterRequest {
        name: b.name.unwrap_or_else(|| "worker".into()),
        handlers: b.handlers,
        capacity: b.capacity.unwrap_or(1),
    };
    // The worker's namespaces are those of the token that registered it.
    let registered = do_register(&state, req, &access.0.namespaces).await?;
    Ok((StatusCode::CREATED, Json(registered)))
}

fn to_wire(c: StoreClaimed) -> ClaimedRun {
    ClaimedRun {
        run_id: c.run_id,
        attempt: c.attempt,
        job_id: c.job_id,
        handler: c.handler,
        payload: c.payload,
        timeout: c.timeout.map(duration::format),
        scheduled_for: c.scheduled_for,
        lease_expires_at: c.lease_expires_at,
    }
}

pub(crate) async fn do_claim(state: &AppState, worker_id: &str, req: ClaimRequest) -> ApiResult<ClaimResponse> {
    let wait = match req.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => duration::parse(w).map_err(|e| ApiError::invalid(format!("wait: {e}")))?.min(MAX_WAIT),
    };
    let max = req.max.clamp(1, 1000);
    let (runs, waited) = state.dispatcher.claim(worker_id, max, wait).await?;
    Ok(ClaimResponse { runs: runs.into_iter().map(to_wire).collect(), waited_ms: waited.as_millis() as u64 })
}

/// `POST /v1/workers/{id}/claim` body (`max` default 1, `wait` default none).
#[derive(serde::Deserialize, utoipa::ToSchema)]
pub struct ClaimBody {
    /// At most this many runs (default 1; 0 counts as 1, more than 1000 as 1000).
    #[serde(default)]
    max: Option<u32>,
    /// Long-poll up to this long when nothing is due (humantime, at most 60s); absent = answer at once.
    #[serde(default)]
    wait: Option<String>,
}

/// Claim due runs of the worker's handlers; long-polls up to `wait`.
#[utoipa::path(post, path = "/v1/workers/{id}/claim", operation_id = "claim_runs", tag = "workers", params(("id" = String, Path, description = "The worker's id (from register)")), request_body = ClaimBody,
    description = "Claims up to `max` (default 1, at most 1000) due runs of the worker's handlers; long-polls up to `wait` (at most 60s) when none is due.",
    responses((status = 200, description = "Claimed runs (may be empty)", body = ClaimResponse),
        (status = 403, description = "The in-process worker (`in_process_worker`), or a role that may not claim", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown or deleted worker", body = crate::error::ErrorBody), (status = 422, description = "Invalid value", body = crate::error::ErrorBody)))]
pub async fn claim(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ClaimBody>,
) -> ApiResult<Json<ClaimResponse>> {
    // The store narrows the claim to the namespaces the worker registered with.
    remote_worker(&state, &access, &id).await?;
    let req = ClaimRequest { max: b.max.unwrap_or(1), wait: b.wait };
    Ok(Json(do_claim(&state, &id, req).await?))
}

pub(crate) async fn do_heartbeat(
    state: &AppState,
    worker_id: &str,
    req: HeartbeatRequest,
) -> ApiResult<HeartbeatResponse> {
    let held: Vec<Lease> = req
        .runs
        .into_iter()
        .map(|r| Lease { run_id: r.run_id, worker_id: worker_id.to_string(), attempt: r.attempt })
        .collect();
    let out = state.store.run_heartbeat(worker_id, &held, state.config.lease, state.clock.now()).await?;
    Ok(HeartbeatResponse { lease_expires_at: out.lease_expires_at, cancel: out.cancel, lost: out.lost })
}

/// Extend the leases of held runs; answers which to cancel and which are lost.
#[utoipa::path(post, path = "/v1/workers/{id}/heartbeat", operation_id = "heartbeat_worker", tag = "workers", params(("id" = String, Path, description = "The worker's id (from register)")), request_body = HeartbeatRequest,
    responses((status = 200, description = "Leases extended; runs to cancel and runs lost", body = HeartbeatResponse),
        (status = 403, description = "The in-process worker", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown or deleted worker", body = crate::error::ErrorBody), (status = 422, description = "Invalid value", body = crate::error::ErrorBody)))]
pub async fn heartbeat(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<HeartbeatRequest>,
) -> ApiResult<Json<HeartbeatResponse>> {
    remote_worker(&state, &access, &id).await?;
    Ok(Json(do_heartbeat(&state, &id, req).await?))
}

pub(crate) async fn do_complete(state: &AppState, run_id: &str, req: CompleteRequest) -> ApiResult<Run> {
    let reported = match req.state {
        Outcome::Succeeded => RunState::Succeeded,
        Outcome::Failed => RunState::Failed,
        Outcome::TimedOut => RunState::TimedOut,
        Outcome::Cancelled => RunState::Cancelled,
    };
    let run = state
        .completions
        .submit(Completion {
            lease: Lease { run_id: run_id.to_string(), worker_id: req.worker_id, attempt: req.attempt },
            state: reported,
            output: req.output,
            error: req.error,
            no_retry: req.retry == Some(false),
        })
        .await
        .inspect_err(|e| {
            if matches!(e, sundial_core::store::StoreError::StaleAttempt(_)) {
                sundial_core::metrics::completion_stale();
            }
        })?;
    sundial_core::metrics::finished(&run);
    if run.state == RunState::Pending || !run.limits.is_empty() {
        // A retry is due later; claimers waiting learn its time on their next look. A run that
        // named limit keys frees room that a held run may take now.
        state.signals.runs_ready.notify_waiters();
    }
    Ok(run)
}

/// Report an attempt's end, fenced by `(worker_id, attempt)`: 409 `stale_attempt` otherwise.
#[utoipa::path(post, path = "/v1/runs/{id}/complete", operation_id = "complete_run", tag = "workers", params(("id" = String, Path, description = "The run's id")), request_body = CompleteRequest,
    responses((status = 200, description = "The run", body = Run), (status = 404, description = "Unknown run or worker", body = crate::error::ErrorBody),
        (status = 409, description = "No longer held by this (worker_id, attempt) (`stale_attempt`)", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid value", body = crate::error::ErrorBody)))]
pub async fn complete(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<CompleteRequest>,
) -> ApiResult<Json<Run>> {
    remote_worker(&state, &access, &req.worker_id).await?;
    if access.0.namespaces != Namespaces::All {
        crate::api::runs::visible_run(&state, &access, &id).await?;
    }
    Ok(Json(do_complete(&state, &id, req).await?))
}

/// Deregister: the worker drains (claims nothing new) and leaves.
#[utoipa::path(delete, path = "/v1/workers/{id}", operation_id = "deregister_worker", tag = "workers", params(("id" = String, Path, description = "The worker's id (from register)")),
    responses((status = 204, description = "The worker drains and leaves"),
        (status = 403, description = "The in-process worker (`in_process_worker`)", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown worker", body = crate::error::ErrorBody)))]
pub async fn deregister(
    State(state): State<AppState>,
    access: Access,
    Path(id): Path<String>,
    _b: IgnoredBody,
) -> ApiResult<StatusCode> {
    remote_worker(&state, &access, &id).await?;
    state.store.worker_deregister(&id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Workers, newest first; dead ones past `--worker-retention` are left out.
#[utoipa::path(get, path = "/v1/workers", operation_id = "list_workers", tag = "workers",
    responses((status = 200, description = "Workers", body = crate::api::ListResponse<Worker>)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let now = state.clock.now();
    let mut workers: Vec<Worker> = state.store.worker_list().await?;
    workers.retain(|w| !w.is_forgotten(now, state.config.worker_retention));
    Ok(Json(serde_json::json!({ "items": workers, "next_cursor": null })))
}
