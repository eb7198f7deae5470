//! Decisions both backends share, as pure functions over rows they have read: each backend reads,
//! calls one of these, and writes the answer in its own SQL. (Turning due triggers into runs is
//! the larger one of these and has its own module, [`super::fire`].)

use super::rows::{ts, RunRow};
use super::{Stats, StoreError};
use crate::attempt::{settle, AttemptInfo, Ended, Settlement};
use crate::domain::{Lease, RunState, Timestamp, Trigger, WorkerState};

// ---------------------------------------------------------------------------------------------
// Submissions and updates.

/// A unique value of a job definition that an existing job already holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Taken<'a> {
    /// The idempotency key (unique per namespace).
    Key(&'a str),
    /// The name, in this namespace.
    Name { name: &'a str, namespace: &'a str },
}

/// A refused submission or update: a name or key another definition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// `name_conflict` or `idempotency_conflict`.
    pub code: &'static str,
    /// The sentence, starting with the field path.
    pub message: String,
}

impl From<Conflict> for StoreError {
    fn from(c: Conflict) -> Self {
        StoreError::Conflict { code: c.code, message: c.message }
    }
}

/// What a submission is when an existing job holds its key (looked up first) or its name: a
/// replay (`Ok`) or a conflict. A derived key (the ingest path's, e.g. Kafka offsets) names the
/// same message again, so it is always a replay.
pub(crate) fn submission_vs_existing(
    taken: Taken<'_>,
    explicit_key: bool,
    same_definition: bool,
) -> Result<(), Conflict> {
    let replay = match taken {
        Taken::Key(_) => same_definition || !explicit_key,
        Taken::Name { .. } => same_definition,
    };
    if replay {
        return Ok(());
    }
    Err(match taken {
        Taken::Key(key) => Conflict {
            code: "idempotency_conflict",
            message: format!("idempotency_key: {key:?} was already used for a different job definition"),
        },
        Taken::Name { name, namespace } => Conflict {
            code: "name_conflict",
            message: format!("name: {name:?} is taken in namespace {namespace:?} by a job with a different definition"),
        },
    })
}

/// The fingerprint stored with a new job whose stored key (the client's or the derived one) is
/// `key`. A job with neither a name nor a key is never the one a later submission is compared
/// with by fingerprint in a way that could match: it is found by name only through its
/// generated name, and a submission naming it carries that name in its own fingerprint while
/// the job's would not. So its fingerprint (a canonical JSON of the whole definition) is not
/// computed: batch submissions of anonymous jobs skip it.
pub(crate) fn stored_fingerprint(spec: &crate::domain::JobSpec, key: Option<&str>) -> String {
    if spec.name.is_some() || key.is_some() {
        spec.fingerprint()
    } else {
        String::new()
    }
}

/// The conflict of an update that gives a job a key or name another job holds.
pub(crate) fn update_conflict(taken: Taken<'_>) -> StoreError {
    match taken {
        Taken::Key(key) => StoreError::Conflict {
            code: "idempotency_conflict",
            message: format!("idempotency_key: {key:?} is used by another job"),
        },
        Taken::Name { name, namespace } => StoreError::Conflict {
            code: "name_conflict",
            message: format!("name: {name:?} is taken in namespace {namespace:?}"),
        },
    }
}

/// The next fire time a job shows: the earliest of its triggers'. A paused job's stored
/// `next_fire_at` may be in the past; it shows the next future time instead.
pub(crate) fn next_fire_time(triggers: &[Trigger], paused: bool, now: Timestamp) -> Option<Timestamp> {
    triggers
        .iter()
        .filter_map(|t| {
            let next = t.next_fire_at?;
            if paused && next < now {
                crate::schedule::next_fire_from(&t.spec, next, now)
            } else {
                Some(next)
            }
        })
        .min()
}

// ---------------------------------------------------------------------------------------------
// Runs: reasons, fencing, settlements.

/// A run's `reason` as shown: its lasting note (a misfire or catch-up note, kept for good) first,
/// then the passing note of its latest attempt after `; `. A claim shows the lasting note alone.
pub(crate) fn run_reason(note: Option<&str>, passing: Option<&str>) -> Option<String> {
    match (note, passing) {
        (Some(n), Some(p)) => Some(format!("{n}; {p}")),
        (Some(n), None) => Some(n.to_string()),
        (None, p) => p.map(str::to_string),
    }
}

/// [`run_reason`] in SQL, for writes that set the reason without reading the run: prefix the
/// new reason's expression with this (`reason = {NOTE_THEN} ?`).
pub(crate) const NOTE_THEN: &str = "COALESCE(note || '; ', '') ||";

/// The fencing check: the run is `running` under exactly this lease.
pub(crate) fn holds(row: &RunRow, lease: &Lease) -> bool {
    row.state == RunState::Running.as_str()
        && row.worker_id.as_deref() == Some(lease.worker_id.as_str())
        && row.attempt == i64::from(lease.attempt)
}

/// The lease a running row is held under (the fence its settlement's `WHERE` checks).
pub(crate) fn lease_of(row: &RunRow) -> Lease {
    Lease { run_id: row.id.clone(), worker_id: row.worker_id.clone().unwrap_or_default(), attempt: row.attempt as u32 }
}

/// What a settled attempt writes: the new state, the retry time, when it finished, and the
/// reason (the lasting note kept first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettleWrite {
    /// The attempt's settlement.
    pub settlement: Settlement,
    /// `finished_at`, when the run is finished.
    pub finished_at: Option<i64>,
    /// The reason to store.
    pub reason: Option<String>,
}

/// Settles the attempt `row` holds, ended so at `now` ([`crate::attempt::settle`]).
pub(crate) fn settle_row(row: &RunRow, ended: Ended, error: Option<&str>, now: Timestamp) -> SettleWrite {
    let info = AttemptInfo { attempt: row.attempt as u32, retry: row.retry(), cancel_requested: row.cancel_requested };
    let settlement = settle(info, ended, error, now);
    SettleWrite {
        finished_at: settlement.state.is_finished().then_some(now.timestamp_micros()),
        reason: run_reason(row.note.as_deref(), settlement.reason.as_deref()),
        settlement,
    }
}

/// What an operator's retry writes: the run goes back to `pending`, due now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RetryWrite {
    /// `attempt` + the job's `retry.max_attempts`: a full set of attempts from the current one.
    pub max_attempts: i64,
    /// The old reason with `retried by operator` after `; `.
    pub reason: String,
    /// The lasting note with `retried by operator` after `; `: like a misfire note, it stays on
    /// the run through its later claims and settlements.
    pub note: String,
}

/// The note an operator's retry adds to `reason`.
pub(crate) const RETRIED_BY_OPERATOR: &str = "retried by operator";

/// An operator's retry of `row`: only a `failed`, `timed_out` or `cancelled` run may go back.
/// `job_max_attempts` is its job's `retry.max_attempts` (`None` when the job was deleted: one
/// more attempt).
pub(crate) fn operator_retry(row: &RunRow, job_max_attempts: Option<i64>) -> Result<RetryWrite, StoreError> {
    let state = row.state()?;
    if !matches!(state, RunState::Failed | RunState::TimedOut | RunState::Cancelled) {
        return Err(StoreError::NotRetryable(format!(
            "run {} is {}; only failed, timed_out or cancelled runs can be retried",
            row.id,
            state.as_str()
        )));
    }
    Ok(RetryWrite {
        max_attempts: row.attempt + job_max_attempts.unwrap_or(1).max(1),
        reason: match row.reason.as_deref() {
            Some(r) if !r.is_empty() => format!("{r}; {RETRIED_BY_OPERATOR}"),
            _ => RETRIED_BY_OPERATOR.to_string(),
        },
        note: match row.note.as_deref() {
            Some(n) if !n.is_empty() => format!("{n}; {RETRIED_BY_OPERATOR}"),
            _ => RETRIED_BY_OPERATOR.to_string(),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Stats.

/// The counts [`Store::stats`](super::Store::stats) reads, as the rows both backends return.
#[derive(Debug, Default)]
pub(crate) struct StatCounts {
    /// `(state, count)` of runs.
    pub runs_by_state: Vec<(String, i64)>,
    /// Due pending runs, and the oldest one's `scheduled_for`.
    pub due: (i64, Option<i64>),
    /// Jobs stored.
    pub jobs: i64,
    /// Triggers with a fire left.
    pub triggers: i64,
    /// `(state, count)` of workers.
    pub workers_by_state: Vec<(String, i64)>,
}

impl StatCounts {
    /// The domain figures at `now`.
    pub(crate) fn into_stats(self, now: Timestamp) -> Stats {
        let (due, oldest) = self.due;
        Stats {
            runs_by_state: self
                .runs_by_state
                .into_iter()
                .filter_map(|(s, n)| Some((RunState::parse(&s)?, n as u64)))
                .collect(),
            runs_due: due as u64,
            oldest_due_wait_s: oldest
                .map(|o| (now - ts(o)).num_microseconds().unwrap_or(0) as f64 / 1e6)
                .unwrap_or(0.0),
            jobs: self.jobs as u64,
            triggers_active: self.triggers as u64,
            workers_by_state: self
                .workers_by_state
                .into_iter()
                .filter_map(|(s, n)| Some((WorkerState::parse(&s)?, n as u64)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn anonymous_jobs_store_no_fingerprint_named_or_keyed_ones_do() {
        use crate::domain::job::JobRequest;
        use crate::domain::JobSpec;
        let spec = |name: Option<&str>| {
            JobSpec::from_request(JobRequest {
                handler: "echo".into(),
                name: name.map(str::to_string),
                ..Default::default()
            })
            .unwrap()
        };
        let anonymous = spec(None);
        assert_eq!(stored_fingerprint(&anonymous, None), "");
        assert_eq!(stored_fingerprint(&anonymous, Some("k")), anonymous.fingerprint());
        let named = spec(Some("n"));
        assert_eq!(stored_fingerprint(&named, None), named.fingerprint());
        // A submission naming the anonymous job by a generated name never matched it anyway.
        assert_ne!(spec(Some("generated")).fingerprint(), anonymous.fingerprint());
    }

    fn t(secs: i64) -> Timestamp {
        ts(1_800_000_000_000_000 + secs * 1_000_000)
    }

    fn running(attempt: i64, max_attempts: i64, note: Option<&str>) -> RunRow {
        RunRow {
            id: "r1".into(),
            job_id: "j1".into(),
            trigger_id: None,
            namespace: "default".into(),
            handler: "echo".into(),
            payload: "{}".into(),
            priority: 0,
            timeout_us: None,
            max_attempts,
            initial_delay_us: 1_000_000,
            max_delay_us: 1_000_000,
            overlap: "allow".into(),
            scheduled_for: 0,
            fire_time: 0,
            state: "running".into(),
            attempt,
            worker_id: Some("w1".into()),
            worker_name: Some("w1-name".into()),
            lease_expires_at: None,
            started_at: None,
            finished_at: None,
            output: None,
            error: None,
            reason: note.map(str::to_string),
            note: note.map(str::to_string),
            cancel_requested: false,
            created_at: 0,
            limits: "[]".into(),
        }
    }

    #[test]
    fn a_derived_key_is_always_a_replay_an_explicit_one_only_for_the_same_definition() {
        assert!(submission_vs_existing(Taken::Key("k"), false, false).is_ok());
        assert!(submission_vs_existing(Taken::Key("k"), true, true).is_ok());
        match submission_vs_existing(Taken::Key("k"), true, false) {
            Err(Conflict { code: "idempotency_conflict", message }) => {
                assert!(message.starts_with("idempotency_key: \"k\""), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_is_a_replay_only_for_the_same_definition_and_the_conflict_names_the_field() {
        let taken = Taken::Name { name: "n", namespace: "ns" };
        assert!(submission_vs_existing(taken, true, true).is_ok());
        assert!(submission_vs_existing(taken, false, true).is_ok());
        match submission_vs_existing(taken, false, false) {
            Err(Conflict { code: "name_conflict", message }) => {
                assert!(message.starts_with("name: \"n\" is taken in namespace \"ns\""), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(update_conflict(Taken::Key("k")), StoreError::Conflict { code: "idempotency_conflict", .. }));
        assert!(matches!(update_conflict(taken), StoreError::Conflict { code: "name_conflict", .. }));
    }

    #[test]
    fn the_lasting_note_comes_first_and_stays() {
        assert_eq!(run_reason(None, None), None);
        assert_eq!(run_reason(Some("misfired"), None).as_deref(), Some("misfired"));
        assert_eq!(run_reason(None, Some("retry")).as_deref(), Some("retry"));
        assert_eq!(run_reason(Some("misfired"), Some("retry")).as_deref(), Some("misfired; retry"));
    }

    #[test]
    fn only_the_current_holder_at_the_current_attempt_holds_the_run() {
        let row = running(2, 3, None);
        let lease = |w: &str, a| Lease { run_id: "r1".into(), worker_id: w.into(), attempt: a };
        assert!(holds(&row, &lease("w1", 2)));
        assert_eq!(lease_of(&row), lease("w1", 2));
        assert!(!holds(&row, &lease("w1", 1)), "an earlier attempt");
        assert!(!holds(&row, &lease("w2", 2)), "another worker");
        let finished = RunRow { state: "succeeded".into(), ..row };
        assert!(!holds(&finished, &lease("w1", 2)), "no longer running");
    }

    #[test]
    fn a_settlement_keeps_the_note_before_its_own_reason() {
        let row = running(1, 2, Some("misfired: caught up"));
        let w = settle_row(&row, Ended::Reported(RunState::Failed), Some("boom"), t(10));
        assert_eq!(w.settlement.state, RunState::Pending);
        assert_eq!(w.finished_at, None, "a retry is not finished");
        let reason = w.reason.unwrap();
        assert!(reason.starts_with("misfired: caught up; attempt 1 of 2 failed: boom"), "{reason}");
        let w = settle_row(&row, Ended::Reported(RunState::Succeeded), None, t(10));
        assert_eq!((w.finished_at, w.reason.as_deref()), (Some(t(10).timestamp_micros()), Some("misfired: caught up")));
        let last = running(2, 2, None);
        let w = settle_row(&last, Ended::LeaseExpired, None, t(10));
        assert_eq!((w.settlement.state, w.reason.as_deref()), (RunState::Failed, Some("lease expired")));
    }

    #[test]
    fn an_operator_retry_gives_a_full_set_of_attempts_and_appends_to_the_reason() {
        let failed = RunRow {
            state: "failed".into(),
            reason: Some("attempt 3 of 3 failed: boom".into()),
            ..running(3, 3, None)
        };
        let w = operator_retry(&failed, Some(2)).unwrap();
        assert_eq!(w.max_attempts, 5);
        assert_eq!(w.reason, "attempt 3 of 3 failed: boom; retried by operator");
        let cancelled = RunRow { state: "cancelled".into(), reason: None, ..running(0, 3, None) };
        let w = operator_retry(&cancelled, None).unwrap();
        assert_eq!((w.max_attempts, w.reason.as_str()), (1, "retried by operator"), "a deleted job: one more");
        let timed_out = RunRow { state: "timed_out".into(), ..running(1, 1, None) };
        assert!(operator_retry(&timed_out, Some(1)).is_ok());
        for st in ["pending", "running", "succeeded", "skipped"] {
            let r = RunRow { state: st.into(), ..running(1, 3, None) };
            match operator_retry(&r, Some(3)) {
                Err(StoreError::NotRetryable(m)) => assert!(m.contains(st), "{m}"),
                other => panic!("{st}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_paused_jobs_next_fire_time_is_in_the_future() {
        let every = crate::domain::TriggerSpec::from_wire(&crate::domain::trigger::TriggerWire {
            kind: "interval".into(),
            every: Some(Duration::from_secs(60)),
            ..Default::default()
        })
        .unwrap();
        let trig = Trigger { id: "t".into(), spec: every, next_fire_at: Some(t(60)), fires: 0 };
        let triggers = vec![trig];
        assert_eq!(next_fire_time(&triggers, false, t(200)), Some(t(60)), "unpaused: the stored time, due now");
        let shown = next_fire_time(&triggers, true, t(200)).unwrap();
        assert!(shown > t(200), "paused: a future time, not {shown}");
        assert_eq!(next_fire_time(&[], true, t(200)), None);
    }

    #[test]
    fn stats_convert_counts_and_the_oldest_wait() {
        let c = StatCounts {
            runs_by_state: vec![("pending".into(), 3), ("bogus".into(), 1)],
            due: (2, Some(t(0).timestamp_micros())),
            jobs: 4,
            triggers: 5,
            workers_by_state: vec![("active".into(), 1)],
        };
        let s = c.into_stats(t(3));
        assert_eq!(s.runs_by_state, vec![(RunState::Pending, 3)], "unknown states are left out");
        assert_eq!((s.runs_due, s.jobs, s.triggers_active), (2, 4, 5));
        assert!((s.oldest_due_wait_s - 3.0).abs() < 1e-9);
        assert_eq!(s.workers_by_state, vec![(WorkerState::Active, 1)]);
        assert_eq!(StatCounts::default().into_stats(t(3)).oldest_due_wait_s, 0.0);
    }
}
