//! Client input, read the same way by every entry point (the HTTP API and the Kafka ingest):
//! bytes to JSON (malformed → 400), JSON to a typed request naming the failing field by its
//! path (→ 422), and the [`Rejection`] shape, `{code, message}` with its HTTP status, that a
//! field error or a store error becomes. The HTTP server turns a rejection into its response;
//! the ingest puts it on a dead-lettered message's headers.

use crate::domain::job::JobRequest;
use crate::domain::{FieldError, JobSpec, Timestamp};
use crate::store::StoreError;
use serde::de::DeserializeOwned;
use std::time::Duration;

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

/// Default `--max-payload`: 1 MiB of payload JSON per job.
pub const DEFAULT_MAX_PAYLOAD: usize = 1 << 20;
/// Default `--min-interval`.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The job-shape limits a node enforces on top of the domain's validation (`serve` flags), the
/// same for every entry point: the HTTP API and the Kafka ingest, so no path admits what the
/// other refuses (a `1ns` interval through Kafka would burn a core as it would through HTTP).
#[derive(Debug, Clone, Copy)]
pub struct JobLimits {
    /// Largest payload, measured as its JSON text.
    pub max_payload: usize,
    /// Shortest interval period.
    pub min_interval: Duration,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self { max_payload: DEFAULT_MAX_PAYLOAD, min_interval: DEFAULT_MIN_INTERVAL }
    }
}

impl JobLimits {
    /// Validates a submission at `now`: payload size (413 `payload_too_large`), the domain's
    /// rules and the minimum interval (422, with the field's path).
    pub fn validate(&self, req: JobRequest, now: Timestamp) -> Result<JobSpec, Rejection> {
        if let Some(payload) = &req.payload {
            let size = serde_json::to_string(payload).map_or(0, |s| s.len());
            if size > self.max_payload {
                return Err(Rejection::new(
                    413,
                    "payload_too_large",
                    format!("payload: {size} bytes of JSON is over the server's --max-payload of {}", self.max_payload),
                ));
            }
        }
        let spec = crate::schedule::validate_job(req, now)?;
        spec.check_min_interval(self.min_interval)?;
        Ok(spec)
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
            StoreError::NotRetryable(m) => Rejection::new(409, "not_retryable", m),
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
/// all-whitespace) body reads as `{}`. Every body is an object: serde would otherwise read a
/// JSON array as a struct's fields in order, so `[]` passed for a request whose fields all
/// have defaults.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Rejection> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| Rejection::malformed(format!("request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(Rejection::invalid("the request body must be a JSON object"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_that_is_not_an_object_is_422_even_when_every_field_has_a_default() {
        #[derive(serde::Deserialize, Debug)]
        struct AllDefaults {
            #[serde(default)]
            _zone: Option<String>,
        }
        for body in [&b"[]"[..], b"[null]", b"1", b"\"x\"", b"null"] {
            let e = parse::<AllDefaults>(body).expect_err("not an object");
            assert_eq!((e.status, e.message.as_str()), (422, "the request body must be a JSON object"));
        }
        assert!(parse::<AllDefaults>(b"{}").is_ok());
        assert!(parse::<AllDefaults>(b"  ").is_ok(), "an empty body reads as {{}}");
    }

    #[test]
    fn payload_over_the_limit_is_413_and_short_intervals_are_422() {
        let limits = JobLimits { max_payload: 10, min_interval: Duration::from_secs(1) };
        let big = JobRequest {
            handler: "echo".into(),
            payload: Some(serde_json::json!({"x": "0123456789"})),
            ..Default::default()
        };
        let e = limits.validate(big, Timestamp::from_timestamp(1_800_000_000, 0).unwrap()).unwrap_err();
        assert_eq!((e.status, e.code), (413, "payload_too_large"));
        let fast: JobRequest = serde_json::from_value(serde_json::json!({
            "handler": "echo", "triggers": [{"kind": "cron", "expr": "* * * * *"}, {"kind": "interval", "every": "999ms"}]
        }))
        .unwrap();
        let e = limits.validate(fast, Timestamp::from_timestamp(1_800_000_000, 0).unwrap()).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.message.starts_with("triggers[1].every: must be at least 1s"), "{}", e.message);
    }
}
