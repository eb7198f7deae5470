//! Previews of due times: `GET /v1/jobs/{id}/fires` for a saved job and `POST
//! /v1/triggers/preview` for a trigger that is not saved. Both answer with what
//! `sundial_core::schedule` computes for real fires; this module only reads parameters and
//! the job.

use super::{JobId, ListResponse, Params};
use crate::auth::Access;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use sundial_core::domain::trigger::TriggerWire;
use sundial_core::domain::{Timestamp, TriggerSpec};
use sundial_core::schedule::{self, Calendar, PreviewFire, PREVIEW_LIMIT};

/// Items when `limit` is not given.
const DEFAULT_LIMIT: usize = 10;

/// `limit`: 1 to [`PREVIEW_LIMIT`], default [`DEFAULT_LIMIT`]; anything else is 422.
fn preview_limit(raw: Option<String>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PREVIEW_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!("limit: expected an integer from 1 to {PREVIEW_LIMIT}, got {v:?}"))),
        },
    }
}

fn answer(items: Vec<PreviewFire>) -> Json<ListResponse<PreviewFire>> {
    Json(ListResponse { items, next_cursor: None })
}

/// A job's next due times strictly after `after` (default now), all triggers merged in time
/// order, honouring each trigger's window and fires left. A paused job previews too.
#[utoipa::path(get, path = "/v1/jobs/{id}/fires", operation_id = "job_fires",
    params(
        ("id" = String, Path, description = "Job id, or namespace/name"),
        ("after" = Option<String>, Query, description = "RFC 3339; due times strictly after it (default now)"),
        ("limit" = Option<u32>, Query, description = "1 to 1000, default 10", minimum = 1, maximum = 1000),
    ),
    responses((status = 200, body = ListResponse<PreviewFire>), (status = 404), (status = 422)))]
pub async fn job_fires(
    State(state): State<AppState>,
    access: Access,
    JobId(id): JobId,
    p: Params,
) -> ApiResult<Json<ListResponse<PreviewFire>>> {
    let limit = preview_limit(p.str("limit"))?;
    let now = state.clock.now();
    let after = p.time("after")?.unwrap_or(now);
    let job = super::jobs::visible_job(&state, &access, &id).await?;
    let specs: Vec<&TriggerSpec> = job.triggers.iter().map(|t| &t.spec).collect();
    let loaded = calendars_named(&state, &specs).await?;
    let cals: Vec<Vec<Calendar>> = job.triggers.iter().map(|t| calendars_of(&t.spec, &loaded)).collect();
    let triggers: Vec<_> = job.triggers.iter().zip(&cals).map(|(t, c)| (t, c.as_slice())).collect();
    Ok(answer(schedule::preview(&triggers, after, limit)))
}

/// `POST /v1/triggers/preview` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// A trigger as in a job's `triggers`.
    pub trigger: TriggerWire,
    /// Due times strictly after this instant (default now).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub after: Option<Timestamp>,
    /// 1 to 1000, default 10.
    #[serde(default)]
    pub limit: Option<u64>,
}

/// The next due times of a trigger that is not saved, as if it were created at `after`
/// (`trigger_id` null).
#[utoipa::path(post, path = "/v1/triggers/preview", operation_id = "trigger_preview", request_body = PreviewRequest,
    responses((status = 200, body = ListResponse<PreviewFire>), (status = 422)))]
pub async fn trigger_preview(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<PreviewRequest>,
) -> ApiResult<Json<ListResponse<PreviewFire>>> {
    let limit = preview_limit(req.limit.map(|n| n.to_string()))?;
    let spec = TriggerSpec::from_wire(&req.trigger).map_err(|e| e.within("trigger"))?;
    let now = state.clock.now();
    // The shape check above does not compile the schedule; a bad cron expression is a 422 here too.
    schedule::Schedule::compile(&spec.kind, now).map_err(|e| e.within("trigger"))?;
    let after = req.after.unwrap_or(now);
    let loaded = calendars_named(&state, &[&spec]).await?;
    for (j, name) in spec.calendars.iter().enumerate() {
        if !loaded.contains_key(name) {
            return Err(ApiError::invalid(format!("trigger.calendars[{j}]: unknown calendar {name:?}")));
        }
    }
    Ok(answer(schedule::preview_unsaved(&spec, &calendars_of(&spec, &loaded), after, limit)))
}

/// The stored calendars the triggers name, compiled (what the scheduler plans with).
async fn calendars_named(state: &AppState, specs: &[&TriggerSpec]) -> ApiResult<HashMap<String, Calendar>> {
    let names: HashSet<&String> = specs.iter().flat_map(|s| s.calendars.iter()).collect();
    let mut out = HashMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    for def in state.store.calendar_list().await? {
        if names.contains(&def.name) {
            let cal = def
                .compile()
                .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
            out.insert(def.name, cal);
        }
    }
    Ok(out)
}

fn calendars_of(spec: &TriggerSpec, loaded: &HashMap<String, Calendar>) -> Vec<Calendar> {
    spec.calendars.iter().filter_map(|n| loaded.get(n).cloned()).collect()
}
