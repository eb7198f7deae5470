//! Request bodies: raw bytes (so an oversized body is our 413, not a plain-text one), then JSON
//! (400 when malformed), then typed with the failing field's full path (422).

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body typed as `T`; errors follow API.md.
pub struct JsonBody<T>(pub T);

/// Parses bytes as JSON then as `T`, naming the failing field by its path (the rules every
/// entry point shares live in [`sundial_core::input`]).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    sundial_core::input::parse(bytes).map_err(ApiError::from)
}

/// Types an already parsed JSON value.
pub fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    sundial_core::input::typed(value).map_err(ApiError::from)
}

/// Reads the body, mapping a too-large body to 413 with the API error shape.
pub async fn read_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "request body is larger than --max-body")
        } else {
            ApiError::malformed(format!("could not read request body: {rej}"))
        }
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_bytes(req, state).await?;
        Ok(JsonBody(parse(&bytes)?))
    }
}

/// A body that is read (so its size is checked) and otherwise ignored: `POST`s that take no
/// input accept an empty body or any JSON.
pub struct IgnoredBody;

impl<S: Send + Sync> FromRequest<S> for IgnoredBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_bytes(req, state).await?;
        Ok(IgnoredBody)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_is_named_once_with_its_full_path() {
        let e = typed::<sundial_core::domain::job::JobRequest>(
            serde_json::json!({"handler": "echo", "triggers": [{"kind": "once", "bogus": 1}]}),
        )
        .expect_err("unknown field is refused");
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.starts_with("triggers[0].bogus: unknown field"), "{}", e.message);
        let top = typed::<sundial_core::domain::job::JobRequest>(serde_json::json!({"handler": "e", "bogus": 1}))
            .expect_err("unknown field is refused");
        assert!(top.message.starts_with("bogus: unknown field"), "{}", top.message);
    }

    #[test]
    fn a_missing_field_is_named_by_its_path() {
        let e = typed::<sundial_core::domain::job::JobRequest>(serde_json::json!({"triggers": []}))
            .expect_err("handler is required");
        assert_eq!(e.message, "handler: is required");
    }
}
