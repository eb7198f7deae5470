//! Turning due triggers into runs, as data: both backends load the due triggers, their jobs and
//! those jobs' active runs inside one transaction, call [`fire_actions`], and apply the result
//! in that same transaction. The misfire policy comes from [`crate::schedule::plan`], the overlap
//! policy from [`crate::overlap::decide`].

use super::plan::run_reason;
use super::rows::{dur_us, TriggerRow};
use super::{FireReport, Misfired, StoreError};
use crate::domain::{new_id, JobSpec, Overlap, RunState, Timestamp};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use std::collections::HashMap;
use std::time::Duration;

/// The job fields a run snapshots when it is created.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct JobSnapshot {
    pub id: String,
    pub namespace: String,
    pub handler: String,
    pub payload: String,
    pub priority: i64,
    pub timeout_us: Option<i64>,
    pub max_attempts: i64,
    pub initial_delay_us: i64,
    pub max_delay_us: i64,
    pub overlap: String,
}

/// Columns of [`JobSnapshot`] in the jobs table.
pub(crate) const JOB_SNAPSHOT_COLUMNS: &str =
    "id, namespace, handler, payload, priority, timeout_us, max_attempts, initial_delay_us, max_delay_us, overlap";

impl JobSnapshot {
    pub(crate) fn from_spec(id: &str, spec: &JobSpec) -> Self {
        JobSnapshot {
            id: id.to_string(),
            namespace: spec.namespace.clone(),
            handler: spec.handler.clone(),
            payload: spec.payload.to_string(),
            priority: spec.priority as i64,
            timeout_us: spec.timeout.map(dur_us),
            max_attempts: spec.retry.max_attempts as i64,
            initial_delay_us: dur_us(spec.retry.initial_delay),
            max_delay_us: dur_us(spec.retry.max_delay),
            overlap: spec.overlap.as_str().to_string(),
        }
    }
    pub(crate) fn overlap(&self) -> Overlap {
        Overlap::parse(&self.overlap).unwrap_or_default()
    }
}

/// A run to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub id: String,
    pub job: JobSnapshot,
    pub trigger_id: Option<String>,
    /// The due time that made it; with `trigger_id`, unique.
    pub fire_time: i64,
    pub scheduled_for: i64,
    pub state: RunState,
    pub reason: Option<String>,
    /// The lasting part of `reason` (a misfire note), kept through claims and settlements.
    pub note: Option<String>,
    /// Held because the job is paused.
    pub held: bool,
    /// Waiting behind a running run (`buffer_one`).
    pub blocked: bool,
    /// Asked for by hand (`POST /v1/jobs/{id}/run`): not held when the job is paused.
    pub manual: bool,
    pub created_at: i64,
}

impl NewRun {
    /// A run due at `at`, not from a trigger (manual, or a job with no triggers).
    pub(crate) fn untriggered(job: JobSnapshot, at: Timestamp, held: bool, manual: bool) -> Self {
        NewRun {
            id: new_id(),
            job,
            trigger_id: None,
            fire_time: at.timestamp_micros(),
            scheduled_for: at.timestamp_micros(),
            state: RunState::Pending,
            reason: None,
            note: None,
            held,
            blocked: false,
            manual,
            created_at: at.timestamp_micros(),
        }
    }
    pub(crate) fn finished_at(&self) -> Option<i64> {
        self.state.is_finished().then_some(self.created_at)
    }
}

/// A trigger's advance, applied only if its `next_fire_at` is still `old_next` (so a
/// concurrent scheduler that got there first makes this one a no-op).
#[derive(Debug, Clone)]
pub(crate) struct TriggerAdvance {
    pub id: String,
    pub old_next: i64,
    pub new_next: Option<i64>,
    pub fires_added: i64,
}

/// Everything one scheduler pass writes.
#[derive(Debug, Default)]
pub(crate) struct FireActions {
    pub inserts: Vec<NewRun>,
    pub cancel_pending: Vec<(String, String)>,
    pub cancel_running: Vec<String>,
    pub advances: Vec<TriggerAdvance>,
    /// Triggers with missed due times; a backend keeps only those it advanced.
    pub misfires: Vec<Misfired>,
}

impl FireActions {
    pub(crate) fn report(&self) -> FireReport {
        FireReport {
            triggers: self.advances.len() as u64,
            runs_pending: self.inserts.iter().filter(|r| r.state == RunState::Pending).count() as u64,
            runs_skipped: self.inserts.iter().filter(|r| r.state == RunState::Skipped).count() as u64,
            runs_cancel_requested: self.cancel_running.len() as u64,
            misfires: self.misfires.clone(),
        }
    }
}

/// Plans one pass over due triggers. `jobs` holds the triggers' jobs; `active` the active runs
/// of those jobs whose overlap policy is not `allow`.
pub(crate) fn fire_actions(
    triggers: &[TriggerRow],
    jobs: &HashMap<String, JobSnapshot>,
    active: &mut HashMap<String, ActiveRuns>,
    now: Timestamp,
    misfire_threshold: Duration,
) -> Result<FireActions, StoreError> {
    let mut out = FireActions::default();
    for t in triggers {
        let Some(next) = t.next_fire_at else { continue };
        let Some(job) = jobs.get(&t.job_id) else { continue };
        let spec = t.spec()?;
        let plan = crate::schedule::plan(&spec, super::rows::ts(next), t.fires.max(0) as u64, now, misfire_threshold);
        for fire in plan.fires {
            let id = new_id();
            let note = fire.reason;
            let (state, reason, blocked) = if fire.skipped {
                (RunState::Skipped, note.clone(), false)
            } else {
                let a = active.entry(job.id.clone()).or_default();
                match decide(job.overlap(), a, &id) {
                    Decision::Pending { blocked } => (RunState::Pending, note.clone(), blocked),
                    Decision::Skipped(why) => (RunState::Skipped, run_reason(note.as_deref(), Some(&why)), false),
                    Decision::Supersede { cancel_pending, cancel_running } => {
                        out.cancel_pending.extend(cancel_pending.into_iter().map(|r| (r, superseded_reason(&id))));
                        out.cancel_running.extend(cancel_running);
                        (RunState::Pending, note.clone(), false)
                    }
                }
            };
            let at = fire.scheduled_for.timestamp_micros();
            out.inserts.push(NewRun {
                id,
                job: job.clone(),
                trigger_id: Some(t.id.clone()),
                fire_time: at,
                scheduled_for: at,
                state,
                reason,
                note,
                held: false,
                blocked,
                manual: false,
                created_at: now.timestamp_micros(),
            });
        }
        if plan.missed > 0 {
            out.misfires.push(Misfired {
                policy: spec.misfire,
                job_id: job.id.clone(),
                trigger_id: t.id.clone(),
                count: plan.missed,
            });
        }
        out.advances.push(TriggerAdvance {
            id: t.id.clone(),
            old_next: next,
            new_next: plan.next_fire_at.map(|n| n.timestamp_micros()),
            fires_added: plan.fires_added as i64,
        });
    }
    Ok(out)
}
