//! Client input, read the same way by every entry point (the HTTP API and the Kafka ingest):
//! bytes to JSON (malformed → 400), JSON to a typed request naming the failing field by its
//! path (→ 422), and the [`Rejection`] shape, `{code, message}` with its HTTP status, that a
//! field error or a store error becomes. The HTTP server turns a rejection into its response;
//! the ingest puts it on a dead-lettered message's headers.

use crate::domain::FieldError;
use crate::store::StoreError;
use serde::de::DeserializeOwned;

/// Most jobs accepted in one batch (`POST /v1/jobs/batch`, a `{"jobs": [...]}` message).
pub const MAX_BATCH: usize = 10_000;

/// Why input was refused: an HTTP status, a snake_case code and a sentence naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status (400, 404, 409, 413, 422, 503, 500).
    pub status: u16,
    /// snake_case code.
    pub code: &'static str,
    /// Human sentence naming the field.
    pub message: String,
}

impl Rejection {
    /// Builds a rejection.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    /// 400 `malformed_json`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(400, "malformed_json", message)
    }
    /// 422 `invalid_value`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "invalid_value", message)
    }
    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, "not_found", format!("{} not found", what.into()))
    }
    /// 413 `batch_too_large`, when a batch holds more than [`MAX_BATCH`] jobs.
    pub fn batch_too_large(count: usize) -> Self {
        Self::new(413, "batch_too_large", format!("jobs: at most {MAX_BATCH} jobs per batch, got {count}"))
    }
}

impl From<FieldError> for Rejection {
    fn from(e: FieldError) -> Self {
        Rejection::invalid(e.to_string())
    }
}

impl From<StoreError> for Rejection {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Rejection::not_found(what),
            StoreError::Conflict { code, message } => Rejection::new(409, code, message),
            StoreError::StaleAttempt(run) => Rejection::new(
                409,
                "stale_attempt",
                format!("run {run} is no longer held by this worker_id and attempt"),
            ),
            StoreError::AlreadyFinished(run) => {
                Rejection::new(409, "already_finished", format!("run {run} already finished"))
            }
            StoreError::Invalid(m) => Rejection::invalid(m),
            StoreError::Unavailable(m) => Rejection::new(503, "store_unavailable", format!("store unavailable: {m}")),
            StoreError::Internal(m) => {
                tracing::error!(error = %m, "internal store error");
                Rejection::new(500, "internal", m)
            }
        }
    }
}

/// Parses bytes as JSON then as `T`, naming the failing field by its path. An empty (or
/// all-whitespace) body reads as `{}`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| Rejection::malformed(format!("request body is not valid JSON: {e}")))?
    };
    typed(value)
}

/// Types an already parsed JSON value.
pub fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, Rejection> {
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
            Rejection::invalid(msg)
        } else {
            Rejection::invalid(format!("{path}: {msg}"))
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
