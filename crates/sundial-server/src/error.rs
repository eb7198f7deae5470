//! The API's error shape, `{"error": {"code", "message"}}`, and the mapping from store errors
//! and body rejections to status codes (400/401/403/404/409/413/422/429/503).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sundial_core::domain::FieldError;
use sundial_core::input::Rejection;
use sundial_core::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code.
    pub code: &'static str,
    /// Human sentence naming the field.
    pub message: String,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    /// 400 malformed JSON.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }
    /// 422 invalid value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message)
    }
    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{} not found", what.into()))
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::invalid(e.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, r.code, r.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if matches!(e, StoreError::Unavailable(_) | StoreError::Internal(_)) {
            sundial_core::metrics::store_error();
        }
        Rejection::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

/// The error body, as documented in the OpenAPI document.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `{"code", "message"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case code (`invalid_value`, `not_found`, `unauthorized`, `forbidden`, …).
    pub code: String,
    /// Human sentence naming the field by its path.
    pub message: String,
}

/// Handler result alias.
pub type ApiResult<T> = Result<T, ApiError>;
