//! `/v1/jobs`: submit (with idempotency and group commit), batch, list, get, patch, delete,
//! pause, resume, run now.

use super::{JobId, ListResponse, Params};
use crate::auth::{Access, ListScope};
use crate::body::{typed, IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sundial_core::domain::{job::JobRequest, BackfillOutcome, BackfillRequest, Job, JobSpec, Run};
use sundial_core::input::Rejection;

use sundial_core::store::{JobCreate, JobCreated, JobFilter, StoreError};

use sundial_core::input::MAX_BATCH;

/// The job `id`, if the caller may see its namespace; else the same 404 as an unknown id.
pub(crate) async fn visible_job(state: &AppState, access: &Access, id: &str) -> ApiResult<Job> {
    let job = state.store.job_get(id, state.clock.now()).await?;
    access.see(&job.namespace, || format!("job {id}"))?;
    Ok(job)
}

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
#[utoipa::path(post, path = "/v1/jobs", operation_id = "create_job", tag = "jobs", request_body = JobRequest,
    responses((status = 201, description = "Created", body = Job), (status = 200, description = "The existing job (idempotent replay)", body = Job),
        (status = 409, description = "Name or idempotency key taken by another definition", body = crate::error::ErrorBody),
        (status = 413, description = "Payload over --max-payload (`payload_too_large`) or body over --max-body", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid value; the message names the field path", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    access: Access,
    JsonBody(req): JsonBody<JobRequest>,
) -> ApiResult<Response> {
    let spec = state.config.job_limits.validate(req, state.clock.now())?;
    access.create(&spec.namespace)?;
    super::calendars::check_job(&state, &spec).await?;
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

/// `POST /v1/jobs/batch` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// One per submitted job, in order.
    pub items: Vec<BatchItem>,
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
    #[schema(value_type = Option<crate::error::ErrorDetail>)]
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
#[utoipa::path(post, path = "/v1/jobs/batch", operation_id = "create_jobs_batch", tag = "jobs", request_body = BatchRequest,
    description = "At most 10,000 jobs per batch (413 `batch_too_large`). Each item stands alone: its status is 201, 200 or its own error (403, 409, 413, 422).",
    responses((status = 200, description = "One item per submitted job, in order", body = BatchResponse),
        (status = 413, description = "More than 10,000 jobs (`batch_too_large`) or body over --max-body", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid body", body = crate::error::ErrorBody)))]
pub async fn batch(
    State(state): State<AppState>,
    access: Access,
    JsonBody(req): JsonBody<BatchRequest>,
) -> ApiResult<Response> {
    if req.jobs.len() > MAX_BATCH {
        return Err(Rejection::batch_too_large(req.jobs.len()).into());
    }
    let mut items: Vec<Option<BatchItem>> = Vec::with_capacity(req.jobs.len());
    let mut valid = Vec::new();
    let mut slots = Vec::new();
    let now = state.clock.now();
    for (i, raw) in req.jobs.into_iter().enumerate() {
        // Each item is judged alone: its shape, its limits, its namespace (403 per item).
        let judged = typed::<JobRequest>(raw)
            .and_then(|r| state.config.job_limits.validate(r, now).map_err(ApiError::from))
            .and_then(|spec| access.create(&spec.namespace).map(|()| spec));
        match judged {
            Ok(spec) => {
                valid.push(JobCreate { spec, derived_idempotency_key: None });
                slots.push(i);
                items.push(None);
            }
            Err(e) => items.push(Some(error_item(e))),
        }
    }
    // Calendar names are checked against one read of the calendars, each item alone.
    let known = super::calendars::known_names(&state, &valid.iter().map(|c| &c.spec).collect::<Vec<_>>()).await?;
    let mut checked = Vec::with_capacity(valid.len());
    let mut checked_slots = Vec::with_capacity(slots.len());
    for (c, slot) in valid.into_iter().zip(slots) {
        match super::calendars::check_names(&c.spec, known.as_ref()) {
            Ok(()) => {
                checked.push(c);
                checked_slots.push(slot);
            }
            Err(e) => items[slot] = Some(error_item(e.into())),
        }
    }
    let (valid, slots) = (checked, checked_slots);
    if !valid.is_empty() {
        let results = state.store.job_create_many(valid, state.clock.now()).await?;
        for (slot, r) in slots.into_iter().zip(results) {
            items[slot] = Some(match r {
                Ok(c) => {
                    let status = if c.created { 201 } else { 200 };
                    BatchItem { status, job: Some(c.job), error: None }
                }
                Err(e) => error_item(e.into()),
            });
        }
        let stored: Vec<&Job> = items.iter().flatten().filter_map(|i| i.job.as_ref()).collect();
        metrics::counter!("sundial_jobs_submitted_total", "outcome" => "batch").increment(stored.len() as u64);
        after_create(&state, &stored);
    }
    let items: Vec<BatchItem> = items.into_iter().map(|i| i.expect("every slot filled")).collect();
    Ok(Json(BatchResponse { items }).into_response())
}

/// List jobs, newest first. Filters: `namespace`, `name`, `handler`, `paused`.
#[utoipa::path(get, path = "/v1/jobs", operation_id = "list_jobs", tag = "jobs",
    params(("namespace" = Option<String>, Query, description = "Only this namespace (narrowed to the token's)"),
        ("name" = Option<String>, Query, description = "Only the job of this name"),
        ("handler" = Option<String>, Query, description = "Only this handler"),
        ("paused" = Option<bool>, Query, description = "Only paused (true) or unpaused (false) jobs"),
        ("limit" = Option<u32>, Query, description = "Page size, default 100; more than 1000 counts as 1000", minimum = 1),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "Jobs, newest first", body = ListResponse<Job>), (status = 422, description = "Bad query parameter", body = crate::error::ErrorBody)))]
pub async fn list(State(state): State<AppState>, access: Access, p: Params) -> ApiResult<Json<ListResponse<Job>>> {
    let scope = access.scope(p.str("namespace"));
    let (namespace, namespaces) = match scope {
        ListScope::AsAsked(ns) => (ns, None),
        ListScope::Empty => return Ok(Json(ListResponse { items: vec![], next_cursor: None })),
        ListScope::Filter(set) => (None, Some(set.into_iter().collect())),
    };
    let filter = JobFilter {
        namespace,
        namespaces,
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
#[utoipa::path(get, path = "/v1/jobs/{id}", operation_id = "get_job", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    responses((status = 200, description = "The job", body = Job), (status = 404, description = "Unknown id (or a namespace the token cannot see)", body = crate::error::ErrorBody)))]
pub async fn get(State(state): State<AppState>, access: Access, JobId(id): JobId) -> ApiResult<Json<Job>> {
    Ok(Json(visible_job(&state, &access, &id).await?))
}

/// Change any definition field; triggers are replaced as a whole.
#[utoipa::path(patch, path = "/v1/jobs/{id}", operation_id = "update_job", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    request_body(content = Object, description = "Any definition fields of a job; triggers are replaced as a whole. `{}` changes nothing."),
    responses((status = 200, description = "The job", body = Job), (status = 404, description = "Unknown id", body = crate::error::ErrorBody),
        (status = 409, description = "Conflict (name or idempotency key taken)", body = crate::error::ErrorBody),
        (status = 413, description = "Payload over --max-payload", body = crate::error::ErrorBody),
        (status = 422, description = "Invalid value", body = crate::error::ErrorBody)))]
pub async fn patch(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    JsonBody(changes): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Job>> {
    let serde_json::Value::Object(changes) = changes else {
        return Err(ApiError::invalid("body: expected a JSON object of fields to change"));
    };
    let current = visible_job(&state, &access, &id).await?;
    let mut merged = serde_json::to_value(current.to_request()).expect("request serializes");
    let obj = merged.as_object_mut().expect("request is an object");
    for (k, v) in changes {
        obj.insert(k, v);
    }
    // Nulls from the current definition mean "unset"; the typed parse treats them so.
    let spec = state.config.job_limits.validate(typed::<JobRequest>(merged)?, state.clock.now())?;
    access.create(&spec.namespace)?;
    // Nothing changes (e.g. `{}`): answer the job as it is, `updated_at` untouched.
    let unchanged = JobSpec::from_request(current.to_request()).is_ok_and(|now| now == spec);
    if unchanged {
        return Ok(Json(current));
    }
    super::calendars::check_job(&state, &spec).await?;
    let job = state.store.job_update(&id, spec, state.clock.now()).await?;
    state.signals.triggers_changed.notify_one();
    state.signals.runs_ready.notify_waiters();
    Ok(Json(job))
}

/// Delete a job; its runs stay queryable, its pending runs are cancelled.
#[utoipa::path(delete, path = "/v1/jobs/{id}", operation_id = "delete_job", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    responses((status = 204, description = "Deleted; its runs stay queryable"), (status = 404, description = "Unknown id", body = crate::error::ErrorBody)))]
pub async fn delete(State(state): State<AppState>, access: Access, JobId(id): JobId) -> ApiResult<StatusCode> {
    visible_job(&state, &access, &id).await?;
    state.store.job_delete(&id, state.clock.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Pause: triggers stop firing, pending runs are not claimed.
#[utoipa::path(post, path = "/v1/jobs/{id}/pause", operation_id = "pause_job", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    responses((status = 200, description = "The job", body = Job), (status = 404, description = "Unknown id", body = crate::error::ErrorBody)))]
pub async fn pause(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    _b: IgnoredBody,
) -> ApiResult<Json<Job>> {
    set_paused(&state, &access, &id, true).await
}

/// Resume: missed fire times follow each trigger's misfire policy.
#[utoipa::path(post, path = "/v1/jobs/{id}/resume", operation_id = "resume_job", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    responses((status = 200, description = "The job", body = Job), (status = 404, description = "Unknown id", body = crate::error::ErrorBody)))]
pub async fn resume(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    _b: IgnoredBody,
) -> ApiResult<Json<Job>> {
    set_paused(&state, &access, &id, false).await
}

/// Pause or resume a job the caller can see; a resume wakes the scheduler (missed fire times)
/// and the claimers (pending runs were held).
async fn set_paused(state: &AppState, access: &Access, id: &str, paused: bool) -> ApiResult<Json<Job>> {
    visible_job(state, access, id).await?;
    let job = state.store.job_set_paused(id, paused, state.clock.now()).await?;
    if !paused {
        state.signals.triggers_changed.notify_one();
        state.signals.runs_ready.notify_waiters();
    }
    Ok(Json(job))
}

/// A run due now (runs even when the job is paused).
#[utoipa::path(post, path = "/v1/jobs/{id}/run", operation_id = "run_job_now", tag = "jobs", params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    responses((status = 201, description = "A run due now", body = Run), (status = 404, description = "Unknown id", body = crate::error::ErrorBody)))]
pub async fn run_now(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    _b: IgnoredBody,
) -> ApiResult<(StatusCode, Json<Run>)> {
    visible_job(&state, &access, &id).await?;
    let run = state.store.job_run_now(&id, state.clock.now()).await.map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("job {id}")),
        e => e.into(),
    })?;
    state.signals.runs_ready.notify_waiters();
    Ok((StatusCode::CREATED, Json(run)))
}

/// Runs for the past due times of the job's triggers (or of the one named) in `[from, until)`
/// that have none yet: due now, `fire_time` the due time, reason `backfill`.
#[utoipa::path(post, path = "/v1/jobs/{id}/backfill", operation_id = "backfill_job", tag = "jobs",
    params(("id" = String, Path, description = "The job's id, or its `namespace/name` (URL-encoded `/`)")),
    request_body = BackfillRequest,
    description = "One run per due time `t` (`from ≤ t < until`) that has no run yet; due times that have one are counted in \
        `existing`. Due times follow the schedule, `start_at`, `end_at` and calendars (also before the trigger was created); \
        `max_fires` does not apply; `fires` and `next_fire_at` do not change. The runs follow the request's `overlap` \
        (default `allow`); a paused job's wait for resume.",
    responses((status = 200, description = "How many runs were created, how many due times had one", body = BackfillOutcome),
        (status = 404, description = "Unknown id", body = crate::error::ErrorBody),
        (status = 422, description = "`until` in the future, not after `from`, or over 10,000 due times; `trigger_id` not of this job", body = crate::error::ErrorBody)))]
pub async fn backfill(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    JsonBody(req): JsonBody<BackfillRequest>,
) -> ApiResult<Json<BackfillOutcome>> {
    let job = visible_job(&state, &access, &id).await?;
    let outcome = state.store.job_backfill(&job.id, &req, state.clock.now()).await?;
    if outcome.created > 0 {
        state.signals.runs_ready.notify_waiters();
    }
    Ok(Json(outcome))
}
