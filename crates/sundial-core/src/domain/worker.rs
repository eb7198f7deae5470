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
    /// The namespaces its claims are narrowed to (those of the token that registered it);
    /// `None`: every namespace. Kept for access checks, not shown.
    #[serde(skip)]
    pub namespaces: Option<Vec<String>>,
}

impl Worker {
    /// Whether a worker is past `retention`: dead, and silent since before `now - retention`.
    /// Such a worker is no longer listed (`--worker-retention`) and the reaper deletes it
    /// (`Store::worker_forget_dead`); active and draining workers are always kept.
    pub fn is_forgotten(&self, now: DateTime<Utc>, retention: std::time::Duration) -> bool {
        let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        self.state == WorkerState::Dead && now.signed_duration_since(self.last_heartbeat) > retention
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn worker(state: WorkerState, last_heartbeat: DateTime<Utc>) -> Worker {
        Worker {
            id: "w".into(),
            name: "w".into(),
            handlers: vec![],
            capacity: 1,
            last_heartbeat,
            state,
            running: 0,
            created_at: last_heartbeat,
            namespaces: None,
        }
    }

    #[test]
    fn only_dead_workers_past_retention_are_forgotten() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z").unwrap().with_timezone(&Utc);
        let hour = Duration::from_secs(3600);
        let later = t + chrono::Duration::seconds(3601);
        assert!(worker(WorkerState::Dead, t).is_forgotten(later, hour));
        assert!(!worker(WorkerState::Dead, t).is_forgotten(t + chrono::Duration::seconds(3600), hour));
        assert!(!worker(WorkerState::Active, t).is_forgotten(later, hour));
        assert!(!worker(WorkerState::Draining, t).is_forgotten(later, hour));
    }
}
