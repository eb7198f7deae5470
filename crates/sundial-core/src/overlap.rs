//! The overlap policy: what a fire does when an earlier run of the same job is still active.
//! Decided when a run becomes due, inside the transaction that creates it, so two scheduler
//! loops cannot both start one.

use crate::domain::Overlap;

/// The job's runs that are still active when a new one becomes due.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveRuns {
    /// Runs `running`.
    pub running: Vec<String>,
    /// Runs `pending` and claimable.
    pub pending: Vec<String>,
    /// Runs `pending` waiting behind a running one (`buffer_one`).
    pub blocked: Vec<String>,
}

/// What to do with the new run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Create it `pending`; `blocked` when it must wait for the running one to finish.
    Pending {
        /// Waits behind a running run.
        blocked: bool,
    },
    /// Record it `skipped` with this reason.
    Skipped(String),
    /// Create it `pending`, cancel these pending runs and ask these running ones to stop.
    Supersede {
        /// Pending runs to cancel now.
        cancel_pending: Vec<String>,
        /// Running runs to flag `cancel_requested`.
        cancel_running: Vec<String>,
    },
}

/// Decides the new run's fate, and records it in `active` (so several fires in one batch see
/// each other).
pub fn decide(policy: Overlap, active: &mut ActiveRuns, new_run_id: &str) -> Decision {
    let decision = match policy {
        Overlap::Allow => Decision::Pending { blocked: false },
        Overlap::Skip => match active.running.first().or(active.pending.first()).or(active.blocked.first()) {
            Some(other) => Decision::Skipped(format!("overlap skip: run {other} is still active")),
            None => Decision::Pending { blocked: false },
        },
        Overlap::BufferOne => {
            if !active.pending.is_empty() || !active.blocked.is_empty() {
                Decision::Skipped("overlap buffer_one: a run is already waiting".to_string())
            } else {
                Decision::Pending { blocked: !active.running.is_empty() }
            }
        }
        Overlap::CancelOther => {
            if active.running.is_empty() && active.pending.is_empty() && active.blocked.is_empty() {
                Decision::Pending { blocked: false }
            } else {
                let mut cancel_pending = std::mem::take(&mut active.pending);
                cancel_pending.append(&mut active.blocked);
                Decision::Supersede { cancel_pending, cancel_running: std::mem::take(&mut active.running) }
            }
        }
    };
    match &decision {
        Decision::Pending { blocked: true } => active.blocked.push(new_run_id.to_string()),
        Decision::Pending { blocked: false } | Decision::Supersede { .. } => {
            active.pending.push(new_run_id.to_string())
        }
        Decision::Skipped(_) => {}
    }
    decision
}

/// Reason recorded on runs cancelled by a newer run of the same job.
pub fn superseded_reason(new_run_id: &str) -> String {
    format!("overlap cancel_other: superseded by run {new_run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(id: &str) -> ActiveRuns {
        ActiveRuns { running: vec![id.into()], ..Default::default() }
    }

    #[test]
    fn allow_always_creates_a_pending_run() {
        let mut a = running("r1");
        assert_eq!(decide(Overlap::Allow, &mut a, "r2"), Decision::Pending { blocked: false });
    }

    #[test]
    fn skip_records_a_skipped_run_while_one_is_active_and_names_it() {
        let mut a = running("r1");
        match decide(Overlap::Skip, &mut a, "r2") {
            Decision::Skipped(reason) => assert!(reason.contains("r1"), "{reason}"),
            d => panic!("expected skipped, got {d:?}"),
        }
        let mut idle = ActiveRuns::default();
        assert_eq!(decide(Overlap::Skip, &mut idle, "r3"), Decision::Pending { blocked: false });
    }

    #[test]
    fn buffer_one_queues_one_blocked_run_then_skips_further_fires() {
        let mut a = running("r1");
        assert_eq!(decide(Overlap::BufferOne, &mut a, "r2"), Decision::Pending { blocked: true });
        assert!(matches!(decide(Overlap::BufferOne, &mut a, "r3"), Decision::Skipped(_)));
        assert_eq!(a.blocked, vec!["r2".to_string()]);
    }

    #[test]
    fn cancel_other_supersedes_running_and_pending_runs() {
        let mut a = ActiveRuns { running: vec!["r1".into()], pending: vec!["r2".into()], blocked: vec![] };
        assert_eq!(
            decide(Overlap::CancelOther, &mut a, "r3"),
            Decision::Supersede { cancel_pending: vec!["r2".into()], cancel_running: vec!["r1".into()] }
        );
        assert_eq!(a.pending, vec!["r3".to_string()]);
        assert!(a.running.is_empty());
    }
}
