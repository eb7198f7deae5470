//! Operating counts as the API shows them: runs per time bucket (`GET /v1/stats/runs`) and the
//! queue of each handler (`GET /v1/stats/handlers`).

use chrono::{DateTime, Utc};
use serde::Serialize;

/// One time bucket of `GET /v1/stats/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunBucket {
    /// The bucket's start, a multiple of the step since the Unix epoch.
    pub t: DateTime<Utc>,
    /// Runs that finished `succeeded` in the bucket.
    pub succeeded: u64,
    /// Runs that finished `failed` in the bucket.
    pub failed: u64,
    /// Runs that finished `timed_out` in the bucket.
    pub timed_out: u64,
    /// Runs that finished `cancelled` in the bucket.
    pub cancelled: u64,
    /// Runs that finished `skipped` in the bucket.
    pub skipped: u64,
    /// Attempts started (claims) in the bucket.
    pub started: u64,
    /// Median due → start lag of those starts, in whole milliseconds; null without starts.
    pub lag_p50_ms: Option<u64>,
    /// 99th percentile due → start lag of those starts, in whole milliseconds; null without starts.
    pub lag_p99_ms: Option<u64>,
}

/// One handler's queue, in `GET /v1/stats/handlers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HandlerQueue {
    /// The handler.
    pub handler: String,
    /// Runs `pending` (due or not, a paused job's included).
    pub pending: u64,
    /// Pending runs a claim may take now (due, not held by a pause, not waiting behind a
    /// `buffer_one` run).
    pub due: u64,
    /// Runs `running`.
    pub running: u64,
    /// `scheduled_for` of the oldest due run; null when none is due.
    pub oldest_due_at: Option<DateTime<Utc>>,
    /// Live (`active`) workers serving this handler; 0 means nobody will run these runs.
    pub workers: u64,
}
