//! The OpenAPI document, generated from the handlers' annotations.

use crate::api::{fires, jobs, runs, workers};
use utoipa::OpenApi;

/// sundial's API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "sundial", description = "Distributed durable job scheduler: jobs, triggers, runs, workers."),
    paths(
        jobs::create,
        jobs::batch,
        jobs::list,
        jobs::get,
        jobs::patch,
        jobs::delete,
        jobs::pause,
        jobs::resume,
        jobs::run_now,
        fires::job_fires,
        fires::trigger_preview,
        runs::list,
        runs::get,
        runs::cancel,
        runs::retry,
        runs::attempts,
        runs::bulk,
        workers::register,
        workers::claim,
        workers::heartbeat,
        workers::complete,
        workers::deregister,
        workers::list
    ),
    components(schemas(
        sundial_core::domain::Job,
        sundial_core::domain::Run,
        sundial_core::domain::Attempt,
        runs::BulkRequest,
        runs::BulkResponse,
        sundial_core::domain::Worker,
        sundial_core::domain::job::JobRequest,
        sundial_core::domain::trigger::TriggerWire,
        sundial_core::schedule::PreviewFire
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}
