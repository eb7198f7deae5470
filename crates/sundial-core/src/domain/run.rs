//! A run is one firing of a job, and its result. Retries are new attempts of the same run.

use super::duration;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Where a run is in its life. `pending → running → succeeded | failed | timed_out | cancelled`;
/// `skipped` when the overlap or misfire policy refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished badly, attempts exhausted.
    Failed,
    /// Exceeded its timeout on its last attempt.
    TimedOut,
    /// Cancelled by a user, a deletion or `cancel_other`.
    Cancelled,
    /// Refused by the overlap or misfire policy.
    Skipped,
}

impl RunState {
    /// All states, for metrics and validation.
    pub const ALL: [RunState; 7] = [
        RunState::Pending,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Cancelled,
        RunState::Skipped,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Cancelled => "cancelled",
            RunState::Skipped => "skipped",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// True once the run can change no more.
    pub fn is_finished(self) -> bool {
        !matches!(self, RunState::Pending | RunState::Running)
    }
}

/// A run as stored and returned by the API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Run {
    /// Opaque id.
    pub id: String,
    /// The job it is a firing of (the job may since have been deleted).
    pub job_id: String,
    /// The trigger that fired it; null for manual and due-now runs.
    pub trigger_id: Option<String>,
    /// Namespace of the job.
    pub namespace: String,
    /// Handler of the job when it fired.
    pub handler: String,
    /// When it is due; a retry pushes it by the backoff.
    pub scheduled_for: DateTime<Utc>,
    /// The due time that created it (never moved by retries); with `trigger_id`, unique.
    pub fire_time: DateTime<Utc>,
    /// State.
    pub state: RunState,
    /// Number of claims so far (0 until first claimed).
    pub attempt: u32,
    /// Worker holding or last holding it.
    pub worker_id: Option<String>,
    /// That worker's name (kept after the worker is forgotten).
    pub worker_name: Option<String>,
    /// Start of the latest attempt.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a finished state.
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler's result.
    #[schema(value_type = Option<Object>)]
    pub output: Option<serde_json::Value>,
    /// The latest error.
    pub error: Option<String>,
    /// Why it is in this state, when that is not obvious (skips, misfires, retries, expiry).
    pub reason: Option<String>,
    /// A cancel was asked for while it ran; the worker is told at its next heartbeat.
    pub cancel_requested: bool,
    /// When the current lease ends (running runs only).
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Payload the handler gets (a snapshot of the job's when it fired).
    #[serde(skip)]
    pub payload: serde_json::Value,
    /// Priority snapshot.
    pub priority: i32,
    /// Per-attempt timeout snapshot.
    #[serde(with = "duration::optional")]
    #[schema(value_type = Option<String>)]
    pub timeout: Option<Duration>,
    /// Claims allowed in all.
    pub max_attempts: u32,
    /// Flow-control keys, as its job had them when it was created (`[]` when none).
    pub limits: Vec<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// How one attempt of a run ended (`running` while it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Still held by its worker.
    Running,
    /// The handler succeeded.
    Succeeded,
    /// The handler failed.
    Failed,
    /// The attempt overran its timeout.
    TimedOut,
    /// Stopped by a cancel.
    Cancelled,
    /// Its lease expired or its worker was declared dead; the server recovered the run.
    Lost,
}

impl AttemptState {
    /// All states.
    pub const ALL: [AttemptState; 6] = [
        AttemptState::Running,
        AttemptState::Succeeded,
        AttemptState::Failed,
        AttemptState::TimedOut,
        AttemptState::Cancelled,
        AttemptState::Lost,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptState::Running => "running",
            AttemptState::Succeeded => "succeeded",
            AttemptState::Failed => "failed",
            AttemptState::TimedOut => "timed_out",
            AttemptState::Cancelled => "cancelled",
            AttemptState::Lost => "lost",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One attempt of a run: who ran it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Attempt {
    /// Its number (1 for the first claim).
    pub attempt: u32,
    /// The worker that claimed it.
    pub worker_id: String,
    /// That worker's name when it claimed.
    pub worker_name: String,
    /// Claim time.
    pub started_at: DateTime<Utc>,
    /// When it ended (for `lost`, when the server recovered the run); null while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its outcome.
    pub state: AttemptState,
    /// Its error (`"lease expired"` for `lost`).
    pub error: Option<String>,
}

/// The fencing token: a run is held by one worker at one attempt. Heartbeats and completions
/// must carry it; a late answer from an earlier holder no longer matches and is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The run.
    pub run_id: String,
    /// The worker that claimed it.
    pub worker_id: String,
    /// The attempt number its claim made.
    pub attempt: u32,
}
