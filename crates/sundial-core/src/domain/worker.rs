//! A worker is an executor node that claims runs of the handlers it serves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Worker liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Claiming and heartbeating.
    Active,
    /// Deregistered: claims nothing new, finishes what it holds.
    Draining,
    /// Silent for 2 × lease; its runs were recovered.
    Dead,
}

impl WorkerState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Draining => "draining",
            WorkerState::Dead => "dead",
        }
    }
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(WorkerState::Active),
            "draining" => Some(WorkerState::Draining),
            "dead" => Some(WorkerState::Dead),
            _ => None,
        }
    }
}

/// A worker as stored and listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Worker {
    /// Opaque id.
    pub id: String,
    /// Name it registered with.
    pub name: String,
    /// Handlers it serves.
    pub handlers: Vec<String>,
    /// Runs it takes at once.
    pub capacity: u32,
    /// Last claim or heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Liveness.
    pub state: WorkerState,
    /// Runs it holds now.
    pub running: u64,
    /// Registration time.
    pub created_at: DateTime<Utc>,
}
