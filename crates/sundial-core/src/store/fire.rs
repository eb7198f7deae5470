//! Turning due triggers into runs, as data: both backends load the due triggers, their jobs and
//! those jobs' active runs inside one transaction, call [`fire_actions`], and apply the result
//! in that same transaction. The misfire policy comes from [`crate::schedule::plan`], the overlap
//! policy from [`crate::overlap::decide`].
//!
//! Calendars: the fire path loads the calendars its due triggers name in the same transaction
//! and plans with them, so a due time is judged by the calendar as it is when the time is
//! planned (a change applies from the next fire on, whatever `next_fire_at` was computed with).
//! A change that frees times before a stored `next_fire_at` is handled where the calendar is
//! written: the triggers naming it get their `next_fire_at` recomputed in that transaction
//! ([`crate::schedule::next_fire_after_change`]). Either way the cost is one exclusion test per
//! due time, never a walk over the calendar.
//!
//! Backfills ([`backfill_due`], [`backfill_actions`]) make runs for past due times with the same
//! schedule arithmetic and the same overlap decisions.

use super::plan::run_reason;
use super::rows::{dur_us, TriggerRow};
use super::{FireReport, Misfired, StoreError};
use crate::domain::{new_id, BackfillRequest, FieldError, JobSpec, Overlap, RunState, Timestamp, TriggerSpec};
use crate::overlap::{decide, superseded_reason, ActiveRuns, Decision};
use crate::schedule::{Calendar, BACKFILL_LIMIT};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The lasting note of a backfill's runs.
pub(crate) const BACKFILL_NOTE: &str = "backfill";

/// The calendars a trigger names, among those loaded (a name whose calendar is gone excludes
/// nothing: deleting a named calendar is refused, so only a racing delete can leave one).
pub(crate) fn calendars_of(spec: &TriggerSpec, loaded: &HashMap<String, Calendar>) -> Vec<Calendar> {
    spec.calendars.iter().filter_map(|n| loaded.get(n).cloned()).collect()
}

/// [`StoreError::Invalid`] on `triggers[i].calendars[j]` for the first name among `triggers`
/// that is not a stored calendar (the API checks first; this catches other entry points, such
/// as Kafka, and a calendar deleted meanwhile).
pub(crate) fn unknown_calendar(triggers: &[TriggerSpec], loaded: &HashMap<String, Calendar>) -> Option<StoreError> {
    triggers.iter().enumerate().find_map(|(i, t)| {
        let (j, name) = t.calendars.iter().enumerate().find(|(_, n)| !loaded.contains_key(*n))?;
        Some(StoreError::Invalid(format!("triggers[{i}].calendars[{j}]: unknown calendar {name:?}")))
    })
}

/// The trigger ids among due times, sorted and without repeats.
pub(crate) fn trigger_ids(due: &[(String, Timestamp)]) -> Vec<String> {
    let mut ids: Vec<String> = due.iter().map(|(t, _)| t.clone()).collect();
    ids.dedup();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every calendar name the triggers name, sorted and without repeats.
pub(crate) fn calendar_names<'a>(specs: impl IntoIterator<Item = &'a TriggerSpec>) -> Vec<String> {
    let mut names: Vec<String> = specs.into_iter().flat_map(|s| s.calendars.iter().cloned()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

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
    /// Flow-control keys as a JSON array.
    pub limits: String,
}

/// Columns of [`JobSnapshot`] in the jobs table.
pub(crate) const JOB_SNAPSHOT_COLUMNS: &str =
    "id, namespace, handler, payload, priority, timeout_us, max_attempts, initial_delay_us, max_delay_us, overlap, \
     limits";

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
            limits: super::limits::keys_json(&spec.limits),
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
/// of those jobs whose overlap policy is not `allow`; `calendars` the calendars the triggers name.
pub(crate) fn fire_actions(
    triggers: &[TriggerRow],
    jobs: &HashMap<String, JobSnapshot>,
    active: &mut HashMap<String, ActiveRuns>,
    calendars: &HashMap<String, Calendar>,
    now: Timestamp,
    misfire_threshold: Duration,
) -> Result<FireActions, StoreError> {
    let mut out = FireActions::default();
    for t in triggers {
        let Some(next) = t.next_fire_at else { continue };
        let Some(job) = jobs.get(&t.job_id) else { continue };
        let spec = t.spec()?;
        let cals = calendars_of(&spec, calendars);
        let plan =
            crate::schedule::plan(&spec, super::rows::ts(next), t.fires.max(0) as u64, now, misfire_threshold, &cals);
        for fire in plan.fires {
            let place = Placement { policy: job.overlap(), held: false, now };
            out.place(job, active, &t.id, fire.scheduled_for, fire.skipped, fire.reason, place);
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

/// How a new triggered run is placed.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// The overlap policy to decide with.
    policy: Overlap,
    /// Held (the job is paused).
    held: bool,
    now: Timestamp,
}

impl FireActions {
    /// Adds the run of one due time `at` of trigger `trigger_id`, with its lasting `note`,
    /// deciding overlap against (and recording it in) the job's active runs.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        job: &JobSnapshot,
        active: &mut HashMap<String, ActiveRuns>,
        trigger_id: &str,
        at: Timestamp,
        skipped: bool,
        note: Option<String>,
        p: Placement,
    ) {
        let id = new_id();
        let (state, reason, blocked) = if skipped {
            (RunState::Skipped, note.clone(), false)
        } else {
            let a = active.entry(job.id.clone()).or_default();
            match decide(p.policy, a, &id) {
                Decision::Pending { blocked } => (RunState::Pending, note.clone(), blocked),
                Decision::Skipped(why) => (RunState::Skipped, run_reason(note.as_deref(), Some(&why)), false),
                Decision::Supersede { cancel_pending, cancel_running } => {
                    self.cancel_pending.extend(cancel_pending.into_iter().map(|r| (r, superseded_reason(&id))));
                    self.cancel_running.extend(cancel_running);
                    (RunState::Pending, note.clone(), false)
                }
            }
        };
        let at = at.timestamp_micros();
        self.inserts.push(NewRun {
            id,
            job: job.clone(),
            trigger_id: Some(trigger_id.to_string()),
            fire_time: at,
            scheduled_for: at,
            state,
            reason,
            note,
            held: p.held,
            blocked,
            manual: false,
            created_at: p.now.timestamp_micros(),
        });
    }
}

/// The due times a backfill covers: for each trigger of the job (or only `req.trigger_id`),
/// every due time `t` with `from ≤ t < until`, following its schedule, window and calendars
/// (`calendars` holds those the triggers name), `max_fires` ignored. Checks the request: `until`
/// not in the future and after `from`, at most [`BACKFILL_LIMIT`] due times in all, `trigger_id`
/// one of these triggers.
///
/// An interval's grid runs through the trigger's `next_fire_at`; a trigger with none left (it
/// ended) has its grid through `start_at`, else through `fallback_anchor`.
pub(crate) fn backfill_due(
    triggers: &[TriggerRow],
    calendars: &HashMap<String, Calendar>,
    req: &BackfillRequest,
    fallback_anchor: Timestamp,
    now: Timestamp,
) -> Result<Vec<(String, Timestamp)>, StoreError> {
    let invalid = |e: FieldError| StoreError::Invalid(e.to_string());
    if req.until > now {
        return Err(invalid(FieldError::new("until", "is in the future")));
    }
    if req.until <= req.from {
        return Err(invalid(FieldError::new("until", "must be after from")));
    }
    if let Some(id) = &req.trigger_id {
        if !triggers.iter().any(|t| &t.id == id) {
            return Err(invalid(FieldError::new("trigger_id", format!("{id:?} is not one of this job's triggers"))));
        }
    }
    let mut out = Vec::new();
    for t in triggers.iter().filter(|t| req.trigger_id.as_ref().is_none_or(|id| *id == t.id)) {
        let spec = t.spec()?;
        let anchor = t.next_fire_at.map(super::rows::ts).or(spec.start_at).unwrap_or(fallback_anchor);
        let cals = calendars_of(&spec, calendars);
        let cap = BACKFILL_LIMIT - out.len();
        let times = crate::schedule::due_times(&spec, anchor, req.from, req.until, &cals, cap).map_err(|e| {
            if e.path == "until" && e.message.starts_with("the range holds") {
                FieldError::new("until", format!("the range holds more than {BACKFILL_LIMIT} due times"))
            } else {
                e
            }
        });
        out.extend(times.map_err(invalid)?.into_iter().map(|at| (t.id.clone(), at)));
    }
    Ok(out)
}

/// The runs of a backfill: one per due time in `due` that has no run yet (`existing` holds the
/// `(trigger_id, fire_time)` of those that have), due now, keeping `fire_time`, with the lasting
/// note [`BACKFILL_NOTE`], following the request's overlap policy (default `allow`) against the
/// job's `active` runs, held while the job is `paused`. Returns the actions (no trigger advances:
/// a backfill changes neither `fires` nor `next_fire_at`) and how many due times already had a run.
pub(crate) fn backfill_actions(
    job: &JobSnapshot,
    paused: bool,
    due: &[(String, Timestamp)],
    existing: &HashSet<(String, i64)>,
    policy: Overlap,
    active: ActiveRuns,
    now: Timestamp,
) -> (FireActions, u64) {
    let mut out = FireActions::default();
    let mut active = HashMap::from([(job.id.clone(), active)]);
    // The runs carry the policy they were decided by (what their settlement goes by).
    let job = &JobSnapshot { overlap: policy.as_str().to_string(), ..job.clone() };
    let mut had = 0;
    let place = Placement { policy, held: paused, now };
    for (trigger_id, at) in due {
        if existing.contains(&(trigger_id.clone(), at.timestamp_micros())) {
            had += 1;
            continue;
        }
        out.place(job, &mut active, trigger_id, *at, false, Some(BACKFILL_NOTE.to_string()), place);
        // Due now: the run keeps its due time as `fire_time` only.
        if let Some(r) = out.inserts.last_mut() {
            r.scheduled_for = now.timestamp_micros();
        }
    }
    (out, had)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Misfire, TriggerKind, TriggerSpec};
    use crate::store::rows::{trigger_spec_json, ts, us};

    const EVERY: Duration = Duration::from_secs(10);
    const THRESHOLD: Duration = Duration::from_secs(60);

    fn t(secs: i64) -> Timestamp {
        ts(1_800_000_000_000_000 + secs * 1_000_000)
    }

    fn job(id: &str, overlap: Overlap) -> JobSnapshot {
        JobSnapshot {
            id: id.into(),
            namespace: "default".into(),
            handler: "echo".into(),
            payload: "{}".into(),
            priority: 0,
            timeout_us: None,
            max_attempts: 1,
            initial_delay_us: 0,
            max_delay_us: 0,
            overlap: overlap.as_str().into(),
            limits: "[]".into(),
        }
    }

    /// An interval trigger of `job_id`, due at `next`.
    fn trigger(id: &str, job_id: &str, next: Option<Timestamp>, misfire: Misfire) -> TriggerRow {
        let spec = TriggerSpec {
            kind: TriggerKind::Interval { every: EVERY },
            start_at: None,
            end_at: None,
            max_fires: None,
            misfire,
            catch_up_limit: None,
            calendars: vec![],
        };
        TriggerRow {
            id: id.into(),
            job_id: job_id.into(),
            spec: trigger_spec_json(&spec),
            next_fire_at: next.map(us),
            fires: 0,
        }
    }

    fn plan(
        triggers: &[TriggerRow],
        jobs: &[JobSnapshot],
        active: &[(&str, ActiveRuns)],
        now: Timestamp,
    ) -> FireActions {
        let jobs = jobs.iter().map(|j| (j.id.clone(), j.clone())).collect();
        let mut active = active.iter().map(|(id, a)| (id.to_string(), a.clone())).collect();
        fire_actions(triggers, &jobs, &mut active, &HashMap::new(), now, THRESHOLD).expect("plans")
    }

    fn running(ids: &[&str]) -> ActiveRuns {
        ActiveRuns { running: ids.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn an_on_time_fire_makes_one_pending_run_and_advances_the_trigger_by_one_period() {
        let a = plan(&[trigger("t1", "j1", Some(t(0)), Misfire::FireOnce)], &[job("j1", Overlap::Allow)], &[], t(1));
        assert_eq!(a.inserts.len(), 1);
        let r = &a.inserts[0];
        assert_eq!((r.state, r.trigger_id.as_deref(), r.job.id.as_str()), (RunState::Pending, Some("t1"), "j1"));
        assert_eq!((r.fire_time, r.scheduled_for, r.created_at), (us(t(0)), us(t(0)), us(t(1))));
        assert!(!r.held && !r.blocked && !r.manual && r.reason.is_none());
        assert_eq!(a.advances.len(), 1);
        let adv = &a.advances[0];
        assert_eq!(
            (adv.id.as_str(), adv.old_next, adv.new_next, adv.fires_added),
            ("t1", us(t(0)), Some(us(t(10))), 1)
        );
        assert_eq!(
            a.report(),
            FireReport { triggers: 1, runs_pending: 1, runs_skipped: 0, runs_cancel_requested: 0, misfires: vec![] }
        );
    }

    #[test]
    fn triggers_without_a_next_time_or_without_their_job_are_left_alone() {
        let a = plan(
            &[trigger("t1", "j1", None, Misfire::FireOnce), trigger("t2", "gone", Some(t(0)), Misfire::FireOnce)],
            &[job("j1", Overlap::Allow)],
            &[],
            t(1),
        );
        assert!(a.inserts.is_empty() && a.advances.is_empty(), "{a:?}");
    }

    #[test]
    fn skip_overlap_records_the_fire_skipped_while_a_run_is_active() {
        let a = plan(
            &[trigger("t1", "j1", Some(t(0)), Misfire::FireOnce)],
            &[job("j1", Overlap::Skip)],
            &[("j1", running(&["r0"]))],
            t(1),
        );
        assert_eq!(a.inserts.len(), 1);
        assert_eq!(a.inserts[0].state, RunState::Skipped);
        assert!(a.inserts[0].reason.as_deref().is_some_and(|r| r.contains("r0")), "{:?}", a.inserts[0].reason);
        assert!(a.cancel_pending.is_empty() && a.cancel_running.is_empty());
        assert_eq!(a.report().runs_skipped, 1);
    }

    #[test]
    fn cancel_other_supersedes_the_active_runs_in_favour_of_the_new_one() {
        let active = ActiveRuns { running: vec!["r0".into()], pending: vec!["p0".into()], blocked: vec![] };
        let a = plan(
            &[trigger("t1", "j1", Some(t(0)), Misfire::FireOnce)],
            &[job("j1", Overlap::CancelOther)],
            &[("j1", active)],
            t(1),
        );
        let new = &a.inserts[0];
        assert_eq!(new.state, RunState::Pending);
        assert_eq!(a.cancel_pending, vec![("p0".to_string(), superseded_reason(&new.id))]);
        assert_eq!(a.cancel_running, vec!["r0".to_string()]);
        assert_eq!(a.report().runs_cancel_requested, 1);
    }

    #[test]
    fn buffer_one_decisions_in_one_pass_see_the_runs_planned_before_them() {
        // Two triggers of one buffer_one job with a run going: the first fire waits behind it,
        // the second finds that waiting run and is skipped.
        let a = plan(
            &[trigger("t1", "j1", Some(t(0)), Misfire::FireOnce), trigger("t2", "j1", Some(t(0)), Misfire::FireOnce)],
            &[job("j1", Overlap::BufferOne)],
            &[("j1", running(&["r0"]))],
            t(1),
        );
        let states: Vec<_> = a.inserts.iter().map(|r| (r.trigger_id.clone().unwrap(), r.state, r.blocked)).collect();
        assert_eq!(
            states,
            vec![("t1".to_string(), RunState::Pending, true), ("t2".to_string(), RunState::Skipped, false)]
        );
        assert_eq!(a.advances.len(), 2);
    }

    #[test]
    fn missed_times_under_misfire_skip_become_one_skipped_run_and_the_on_time_ones_run() {
        // Due every 10 s since t(0), planned at t(600) with a 60 s threshold: the 7 times from
        // t(540) on are on time, the 54 before are missed.
        let a = plan(&[trigger("t1", "j1", Some(t(0)), Misfire::Skip)], &[job("j1", Overlap::Allow)], &[], t(600));
        let (skipped, pending): (Vec<_>, Vec<_>) = a.inserts.iter().partition(|r| r.state == RunState::Skipped);
        assert_eq!(skipped.len(), 1, "{a:?}");
        let missed = skipped[0];
        assert!(missed.note.as_deref().is_some_and(|n| n.contains("54")), "{:?}", missed.note);
        assert_eq!(missed.reason, missed.note, "a skipped run's reason is its misfire note");
        let times: Vec<i64> = pending.iter().map(|r| r.scheduled_for).collect();
        assert_eq!(times, (54..=60).map(|i| us(t(i * 10))).collect::<Vec<_>>());
        assert!(pending.iter().all(|r| r.note.is_none() && r.reason.is_none()));
        let adv = &a.advances[0];
        assert_eq!((adv.new_next, adv.fires_added), (Some(us(t(610))), 61), "every due time counts");
        let counted = Misfired { policy: Misfire::Skip, job_id: "j1".into(), trigger_id: "t1".into(), count: 54 };
        assert_eq!(a.report().misfires, [counted], "the report counts every missed time for the metric");
    }

    #[test]
    fn backfill_makes_runs_due_now_for_times_without_one_noted_backfill() {
        let due: Vec<(String, Timestamp)> = (0..4).map(|i| ("t1".to_string(), t(i * 10))).collect();
        let existing = HashSet::from([("t1".to_string(), us(t(10)))]);
        let (a, had) = backfill_actions(
            &job("j1", Overlap::Allow),
            true,
            &due,
            &existing,
            Overlap::Skip,
            ActiveRuns::default(),
            t(100),
        );
        assert_eq!(had, 1);
        let got: Vec<_> = a.inserts.iter().map(|r| (r.fire_time, r.scheduled_for, r.state, r.held)).collect();
        assert_eq!(
            got,
            [
                (us(t(0)), us(t(100)), RunState::Pending, true),
                (us(t(20)), us(t(100)), RunState::Skipped, true),
                (us(t(30)), us(t(100)), RunState::Skipped, true),
            ]
        );
        assert!(a.inserts.iter().all(|r| r.note.as_deref() == Some(BACKFILL_NOTE) && r.job.overlap == "skip"));
        assert!(a.inserts[1].reason.as_deref().is_some_and(|m| m.starts_with("backfill; overlap skip")));
        assert!(a.advances.is_empty(), "a backfill moves no trigger");
    }
}
