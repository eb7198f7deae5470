//! The `/v1` HTTP API: jobs, runs, the worker protocol, previews of due times, limits, stats and
//! calendars.

pub mod calendars;
pub mod fires;
pub mod jobs;
pub mod limits;
pub mod runs;
pub mod stats;
pub mod workers;

use crate::error::ApiError;
use std::collections::HashMap;
use sundial_core::domain::Timestamp;

/// Query parameters, parsed by hand so bad values get the API's 422 shape.
pub struct Params(pub HashMap<String, String>);

impl Params {
    pub(crate) fn str(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }
    pub(crate) fn bool(&self, k: &str) -> Result<Option<bool>, ApiError> {
        self.str(k)
            .map(|v| match v.as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ApiError::invalid(format!("{k}: expected true or false, got {v:?}"))),
            })
            .transpose()
    }
    pub(crate) fn time(&self, k: &str) -> Result<Option<Timestamp>, ApiError> {
        self.str(k)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(&v)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .map_err(|e| ApiError::invalid(format!("{k}: expected an RFC 3339 time, got {v:?} ({e})")))
                    .and_then(|t| {
                        sundial_core::domain::validate::check_time_range(k, &t).map(|()| t).map_err(ApiError::from)
                    })
            })
            .transpose()
    }
    /// `limit`: default 100, at most 1000.
    pub(crate) fn limit(&self) -> Result<u32, ApiError> {
        match self.str("limit") {
            None => Ok(100),
            Some(v) => match v.parse::<u32>() {
                Ok(0) | Err(_) => {
                    Err(ApiError::invalid(format!("limit: expected an integer from 1 to 1000, got {v:?}")))
                }
                Ok(n) => Ok(n.min(1000)),
            },
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let map: HashMap<String, String> = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::new(axum::http::StatusCode::BAD_REQUEST, "malformed_query", e.to_string()))?;
        Ok(Params(map))
    }
}

/// A job named in a path as its id or as `namespace/name` (the `/` URL-encoded; a namespace
/// has no `/`, so the first one splits), resolved to the id.
pub struct JobId(pub String);

impl axum::extract::FromRequestParts<crate::state::AppState> for JobId {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid(format!("id: {e}")))?;
        let Some((namespace, name)) = raw.split_once('/') else {
            return Ok(JobId(raw));
        };
        let filter = sundial_core::store::JobFilter {
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            limit: 1,
            ..Default::default()
        };
        let page = state.store.job_list(&filter, state.clock.now()).await?;
        match page.items.into_iter().next() {
            Some(job) => Ok(JobId(job.id)),
            None => Err(ApiError::not_found(format!("job {raw}"))),
        }
    }
}

/// A list answer: `{"items": [...], "next_cursor": ...}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ListResponse<T> {
    /// Items.
    pub items: Vec<T>,
    /// Cursor for the next page, or null.
    pub next_cursor: Option<String>,
}
