//! `/v1/calendars`: named, global sets of excluded times that triggers name (API.md
//! "Calendars"), and the check that a job's triggers name only stored calendars.

use super::ListResponse;
use crate::body::{IgnoredBody, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use std::collections::HashSet;
use sundial_core::domain::{CalendarDef, CalendarRequest, FieldError, JobSpec};

/// The stored calendar names, when any of `specs` names a calendar (else no read).
pub(crate) async fn known_names(state: &AppState, specs: &[&JobSpec]) -> ApiResult<Option<HashSet<String>>> {
    if !specs.iter().any(|s| s.triggers.iter().any(|t| !t.calendars.is_empty())) {
        return Ok(None);
    }
    Ok(Some(state.store.calendar_list().await?.into_iter().map(|c| c.name).collect()))
}

/// 422 on `triggers[i].calendars[j]` for the first name that is not a stored calendar.
pub(crate) fn check_names(spec: &JobSpec, known: Option<&HashSet<String>>) -> Result<(), FieldError> {
    let Some(known) = known else { return Ok(()) };
    for (i, t) in spec.triggers.iter().enumerate() {
        for (j, name) in t.calendars.iter().enumerate() {
            if !known.contains(name) {
                return Err(FieldError::new(
                    format!("triggers[{i}].calendars[{j}]"),
                    format!("unknown calendar {name:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks one job's calendar names against the store.
pub(crate) async fn check_job(state: &AppState, spec: &JobSpec) -> ApiResult<()> {
    let known = known_names(state, &[spec]).await?;
    Ok(check_names(spec, known.as_ref())?)
}

/// Creates or replaces a calendar; a replace keeps `created_at`. Applies to fires from then on.
#[utoipa::path(
    put,
    path = "/v1/calendars/{name}",
    operation_id = "calendars_put",
    params(("name" = String, Path, description = "1 to 128 of `A-Z a-z 0-9 _ . -`")),
    request_body = CalendarRequest,
    responses(
        (status = 200, body = CalendarDef),
        (status = 400, description = "malformed JSON", body = crate::error::ErrorBody),
        (status = 422, description = "bad name, zone or entry; the message names the field path", body = crate::error::ErrorBody)
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<CalendarRequest>,
) -> ApiResult<Json<CalendarDef>> {
    let calendar = req.validate(&name)?;
    let def = state.store.calendar_put(&calendar, &req.exclude, state.clock.now()).await?;
    // Next due times may have moved earlier.
    state.signals.triggers_changed.notify_one();
    Ok(Json(def))
}

/// Every calendar, by name.
#[utoipa::path(
    get,
    path = "/v1/calendars",
    operation_id = "calendars_list",
    responses((status = 200, body = ListResponse<CalendarDef>))
)]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<ListResponse<CalendarDef>>> {
    Ok(Json(ListResponse { items: state.store.calendar_list().await?, next_cursor: None }))
}

/// One calendar.
#[utoipa::path(
    get,
    path = "/v1/calendars/{name}",
    operation_id = "calendars_get",
    params(("name" = String, Path, description = "The calendar's name")),
    responses((status = 200, body = CalendarDef), (status = 404, description = "no such calendar", body = crate::error::ErrorBody))
)]
pub async fn get(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<CalendarDef>> {
    Ok(Json(state.store.calendar_get(&name).await?))
}

/// Deletes a calendar; refused (409 `calendar_in_use`) while a trigger names it.
#[utoipa::path(
    delete,
    path = "/v1/calendars/{name}",
    operation_id = "calendars_delete",
    params(("name" = String, Path, description = "The calendar's name")),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such calendar", body = crate::error::ErrorBody),
        (status = 409, description = "a trigger names it (`calendar_in_use`)", body = crate::error::ErrorBody)
    )
)]
pub async fn delete(State(state): State<AppState>, Path(name): Path<String>, _b: IgnoredBody) -> ApiResult<StatusCode> {
    state.store.calendar_delete(&name).await.map_err(ApiError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
