//! `/v1/jobs`: submit (with idempotency and group commit), batch, list, get, patch, delete,
//! pause, resume, run now.

use super::{JobId, ListResponse, Params};
use crate::body::{typed, IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sundial_core::domain::{job::JobRequest, Job, Run};
use sundial_core::input::Rejection;
use sundial_core::schedule::validate_job;
use sundial_core::store::{JobCreate, JobCreated, JobFilter, StoreError};

use sundial_core::input::MAX_BATCH;

fn created_response(c: JobCreated) -> Response {
    let status = if c.created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(c.job)).into_response()
}

fn after_create(state: &AppState, jobs: &[&Job]) {
    if jobs.iter().any(|j| j.triggers.is_empty()) {
        state.signals.runs_ready.notify_waiters();
    }
    if jobs.iter().any(|j| !j.triggers.is_empty()) {
        state.signals.triggers_changed.notify_one();
    }
}

/// Submit a job. 201 when created; 200 with the existing job on an idempotent replay.
#[utoipa::path(post, path = "/v1/jobs", request_body = JobRequest,
    responses((status = 201, body = Job), (status = 200, body = Job), (status = 409), (status = 422)))]
pub async fn create(State(state): State<AppState>, JsonBody(req): JsonBody<JobRequest>) -> ApiResult<Response> {
    let spec = validate_job(req, state.clock.now())?;
    // Answers only after the group-commit transaction holding this job committed (guarantee 1).
    let created = state.submissions.submit(JobCreate { spec, derived_idempotency_key: None }).await?;
    metrics::counter!("sundial_jobs_submitted_total", "outcome" => if created.created { "created" } else { "replay" })
        .increment(1);
    after_create(&state, &[&created.job]);
    Ok(created_response(created))
}

/// `POST /v1/jobs/batch` body.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchRequest {
    /// Job submissions, each as for `POST /v1/jobs`.
    #[schema(value_type = Vec<JobRequest>)]
    pub jobs: Vec<serde_json::Value>,
}

/// One item of a batch answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchItem {
    /// 201, 200 or the item's error status.
    pub status: u16,
    /// The job, when stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
    /// The error, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
}

fn error_item(e: ApiError) -> BatchItem {
    BatchItem {
        status: e.status.as_u16(),
        job: None,
        error: Some(serde_json::json!({"code": e.code, "message": e.message})),
    }
}

/// Submit many jobs in one transaction; each item stands alone.
#[utoipa::path(post, path = "/v1/jobs/batch", request_body = BatchRequest,
    responses((status = 200, body = ListResponse<BatchItem>)))]
pub async fn batch(State(state): State<AppState>, JsonBody(req): JsonBody<BatchRequest>) -> ApiResult<Response> {
    if req.jobs.len() > MAX_BATCH {
        return Err(Rejection::batch_too_large(req.jobs.len()).into());
    }
    let mut items: Vec<Option<BatchItem>> = Vec::with_capacity(req.jobs.len());
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    let now = state.clock.now();
    for (i, raw) in req.jobs.into_iter().enumerate() {
        match typed::<JobRequest>(raw).and_then(|r| validate_job(r, now).map_err(ApiError::from)) {
            Ok(spec) => {
                valid.push(JobCreate { spec, derived_idempotency_key: None });
                slots.push(i);
                items.push(None);
            }
            Err(e) => items.push(Some(error_item(e))),
        }
    }
    if !valid.is_empty() {
        let results = state.store.job_create_many(valid, state.clock.now()).await?;
        let mut stored: Vec<Job> = Vec::new();
        for (slot, r) in slots.into_iter().zip(results) {
            items[slot] = Some(match r {
                Ok(c) => {
                    let status = if c.created { 201 } else { 200 };
                    stored.push(c.job.clone());
                    BatchItem { status, job: Some(c.job), error: None }
                }
                Err(e) => error_item(e.into()),
            });
        }
        metrics::counter!("sundial_jobs_submitted_total", "outcome" => "batch").increment(stored.len() as u64);
        after_create(&state, &stored.iter().collect::<Vec<_>>());
    }
    let items: Vec<BatchItem> = items.into_iter().map(|i| i.expect("every slot filled")).collect();
    Ok(Json(serde_json::json!({ "items": items })).into_response())
}

/// List jobs, newest first. Filters: `namespace`, `name`, `handler`, `paused`.
#[utoipa::path(get, path = "/v1/jobs", responses((status = 200, body = ListResponse<Job>)))]
pub async fn list(State(state): State<AppState>, p: Params) -> ApiResult<Json<ListResponse<Job>>> {
    let filter = JobFilter {
        namespace: p.str("namespace"),
        name: p.str("name"),
        handler: p.str("handler"),
        paused: p.bool("paused")?,
        limit: p.limit()?,
        cursor: p.str("cursor"),
    };
    let page = state.store.job_list(&filter, state.clock.now()).await?;
    Ok(Json(ListResponse { items: page.items, next_cursor: page.next_cursor }))
}

/// One job.
#[utoipa::path(get, path = "/v1/jobs/{id}", responses((status = 200, body = Job), (status = 404)))]
pub async fn get(State(state): State<AppState>, JobId(id): JobId) -> ApiResult<Json<Job>> {
    Ok(Json(state.store.job_get(&id, state.clock.now()).await?))
}

/// Change any definition field; triggers are replaced as a whole.
#[utoipa::path(patch, path = "/v1/jobs/{id}", request_body = Object, responses((status = 200, body = Job)))]
pub async fn patch(
    State(state): State<AppState>,
    JobId(id): JobId,
    JsonBody(changes): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Job>> {
    let serde_json::Value::Object(changes) = changes else {
        return Err(ApiError::invalid("body: expected a JSON object of fields to change"));
    };
    let current = state.store.job_get(&id, state.clock.now()).await?;
    let mut merged = serde_json::to_value(current.to_request()).expect("request serializes");
    let obj = merged.as_object_mut().expect("request is an object");
    for (k, v) in changes {
        obj.insert(k, v);
    }
    // Nulls from the current definition mean "unset"; the typed parse treats them so.
    let spec = validate_job(typed::<JobRequest>(merged)?, state.clock.now())?;
    let job = state.store.job_update(&id, spec, state.clock.now()).await?;
    state.signals.triggers_changed.notify_one();
    state.signals.runs_ready.notify_waiters();
    Ok(Json(job))
}

/// Delete a job; its runs stay queryable, its pending runs are cancelled.
#[utoipa::path(delete, path = "/v1/jobs/{id}", responses((status = 204), (status = 404)))]
pub async fn delete(State(state): State<AppState>, JobId(id): JobId) -> ApiResult<StatusCode> {
    state.store.job_delete(&id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause: triggers stop firing, pending runs are not claimed.
#[utoipa::path(post, path = "/v1/jobs/{id}/pause", responses((status = 200, body = Job)))]
pub async fn pause(State(state): State<AppState>, JobId(id): JobId, _b: IgnoredBody) -> ApiResult<Json<Job>> {
    Ok(Json(state.store.job_set_paused(&id, true, state.clock.now()).await?))
}

/// Resume: missed fire times follow each trigger's misfire policy.
#[utoipa::path(post, path = "/v1/jobs/{id}/resume", responses((status = 200, body = Job)))]
pub async fn resume(State(state): State<AppState>, JobId(id): JobId, _b: IgnoredBody) -> ApiResult<Json<Job>> {
    let job = state.store.job_set_paused(&id, false, state.clock.now()).await?;
    state.signals.triggers_changed.notify_one();
    state.signals.runs_ready.notify_waiters();
    Ok(Json(job))
}

/// A run due now (runs even when the job is paused).
#[utoipa::path(post, path = "/v1/jobs/{id}/run", responses((status = 201, body = Run)))]
pub async fn run_now(
    State(state): State<AppState>,
    JobId(id): JobId,
    _b: IgnoredBody,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let run = state.store.job_run_now(&id, state.clock.now()).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("job {id}")),
        e => e.into(),
    })?;
    state.signals.runs_ready.notify_waiters();
    Ok((StatusCode::CREATED, Json(run)))
}
