//! Request bodies: raw bytes (so an oversized body is our 413, not a plain-text one), then JSON
//! (400 when malformed), then typed with the failing field's full path (422).

use crate::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body typed as `T`; errors follow API.md.
pub struct JsonBody<T>(pub T);

/// Parses bytes as JSON then as `T`, naming the failing field by its path.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::malformed(format!("request body is not valid JSON: {e}")))?
    };
    typed(value)
}

/// Types an already parsed JSON value.
pub fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde says "missing field `x`"; API.md wants the message to lead with the field path.
        let (path, msg) = match inner.strip_prefix("missing field `").and_then(|r| r.split_once('`')) {
            Some((field, _)) => (join(&path, field), "is required".to_string()),
            // serde_path_to_error's path already ends with the unknown field itself.
            None => match inner.strip_prefix("unknown field `").and_then(|r| r.split_once('`')) {
                Some((field, rest)) => (join_once(&path, field), format!("unknown field{rest}")),
                None => (path, inner),
            },
        };
        if path.is_empty() || path == "." {
            ApiError::invalid(msg)
        } else {
            ApiError::invalid(format!("{path}: {msg}"))
        }
    })
}

/// `path.field`, unless `path` already ends with that field.
fn join_once(path: &str, field: &str) -> String {
    if path == field || path.ends_with(&format!(".{field}")) {
        path.to_string()
    } else {
        join(path, field)
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() || path == "." {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
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
