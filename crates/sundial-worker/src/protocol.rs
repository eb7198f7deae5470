//! The worker protocol of API.md as Rust types: what a worker sends and receives.
//! The server uses these same types, so the two ends cannot drift apart.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /v1/workers` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Worker name (for humans).
    pub name: String,
    /// Handlers it serves.
    pub handlers: Vec<String>,
    /// Runs it takes at once.
    pub capacity: u32,
}

/// `POST /v1/workers` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    /// Worker id: half of every fencing token.
    pub id: String,
    /// Lease length, humantime (`"30s"`).
    pub lease: String,
    /// How often to heartbeat, humantime (`"10s"`).
    pub heartbeat_interval: String,
}

/// `POST /v1/workers/{id}/claim` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// At most this many runs.
    pub max: u32,
    /// Long-poll up to this long when nothing is due (humantime); absent = answer at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
}

/// One claimed run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedRun {
    /// The run.
    pub run_id: String,
    /// This claim's attempt: the other half of the fencing token.
    pub attempt: u32,
    /// Its job.
    pub job_id: String,
    /// Handler to call.
    pub handler: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Per-attempt timeout (humantime) or null.
    pub timeout: Option<String>,
    /// When it was due.
    pub scheduled_for: DateTime<Utc>,
    /// When the lease ends unless renewed.
    pub lease_expires_at: DateTime<Utc>,
}

/// `POST /v1/workers/{id}/claim` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimResponse {
    /// Claimed runs (may be empty).
    pub runs: Vec<ClaimedRun>,
    /// How long the server held the long poll before it claimed (its own monotonic clock).
    /// The leases began no earlier than the request's send time plus this, which lets a
    /// worker place its local lease deadline safely without trusting wall clocks.
    #[serde(default)]
    pub waited_ms: u64,
}

/// A run a worker holds, as `(run_id, attempt)`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldRun {
    /// The run.
    pub run_id: String,
    /// The attempt the worker holds.
    pub attempt: u32,
}

/// `POST /v1/workers/{id}/heartbeat` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatRequest {
    /// Runs held (may be empty: a heartbeat is also a sign of life).
    #[serde(default)]
    pub runs: Vec<HeldRun>,
}

/// `POST /v1/workers/{id}/heartbeat` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// New lease end for the runs still held.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Stop these and complete them `cancelled`.
    #[serde(default)]
    pub cancel: Vec<String>,
    /// No longer yours: stop these, do not complete them.
    #[serde(default)]
    pub lost: Vec<String>,
}

/// How an attempt ended, as reported by the worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Handler returned output.
    Succeeded,
    /// Handler returned an error.
    Failed,
    /// Handler exceeded the run's timeout and was stopped.
    TimedOut,
    /// Handler was stopped because the run was cancelled.
    Cancelled,
}

/// `POST /v1/runs/{id}/complete` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteRequest {
    /// Fencing token.
    pub worker_id: String,
    /// Fencing token.
    pub attempt: u32,
    /// How it ended.
    pub state: Outcome,
    /// Handler output.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// Error text.
    #[serde(default)]
    pub error: Option<String>,
    /// `false`: another attempt cannot help (e.g. a command the worker refuses), so a `failed`
    /// or `timed_out` run is not retried; absent = `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
}
