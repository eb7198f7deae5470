//! Decisions both backends share, as pure functions over rows they have read: each backend reads,
//! calls one of these, and writes the answer in its own SQL. (Turning due triggers into runs is
//! the larger one of these and has its own module, [`super::fire`].)

use super::rows::{dur_us, ts, us, RunRow};
use super::{HandlerQueue, RunBucket, RunStatsQuery, Stats, StoreError};
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

/// Whether a new job's submission stands alone: no name and no stored key (so no earlier
/// submission can be its replay or conflict with it: it is never looked up), and no trigger (so
/// no calendar to read `FOR SHARE`). Such a job and its due-now run need no lookup before they
/// are inserted, and no transaction beyond the insert itself.
pub(crate) fn stands_alone(spec: &crate::domain::JobSpec, key: Option<&str>) -> bool {
    spec.name.is_none() && key.is_none() && spec.triggers.is_empty()
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
// Pause after failures.

/// What one run's final state does to its job's count of runs in a row that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreakStep {
    /// The count after this run.
    pub streak: i64,
    /// This run completes the streak: the job is to be paused.
    pub pause: bool,
}

/// The rule of `pause_after_failures` for a run of a job whose count is `streak` that settled
/// in `state`, given the job's `threshold` (`None`: not counted at all). A run that ends
/// `failed` or `timed_out` (its own retries spent) counts, a `succeeded` one resets the count,
/// and anything else (`skipped`, `cancelled`, or a retry back to `pending`) leaves it as it is.
/// The job is paused when the count reaches the threshold; a job already paused stays as it
/// is (its reason untouched), while the count goes on until a resume resets it.
pub(crate) fn streak_step(streak: i64, threshold: Option<i64>, paused: bool, state: RunState) -> StreakStep {
    let Some(threshold) = threshold else {
        return StreakStep { streak, pause: false };
    };
    match state {
        RunState::Failed | RunState::TimedOut => {
            let streak = streak.saturating_add(1);
            StreakStep { streak, pause: !paused && streak >= threshold }
        }
        RunState::Succeeded => StreakStep { streak: 0, pause: false },
        _ => StreakStep { streak, pause: false },
    }
}

/// The job's `paused_reason` when the server paused it after `streak` failed runs in a row.
pub(crate) fn paused_after_failures_reason(streak: i64) -> String {
    format!("paused after {streak} runs in a row failed")
}

/// A job's count as a settling transaction read it (under the job's row lock on PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct JobStreak {
    /// The job.
    pub id: String,
    /// `pause_after_failures`.
    pub pause_after_failures: Option<i64>,
    /// Runs in a row that failed so far.
    pub failure_streak: i64,
    /// Paused already.
    pub paused: bool,
}

/// What settling runs of one job writes to it: the new count, and the reason when it pauses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreakWrite {
    /// The job.
    pub job_id: String,
    /// The new count.
    pub streak: i64,
    /// `Some(paused_reason)` when the job is to be paused now.
    pub pause: Option<String>,
}

/// Folds the final states of a job's runs, in the order they finished, into the write to make;
/// `None` when nothing changes.
pub(crate) fn streak_write(job: &JobStreak, states: impl IntoIterator<Item = RunState>) -> Option<StreakWrite> {
    let (mut streak, mut paused, mut pause) = (job.failure_streak, job.paused, None);
    for state in states {
        let step = streak_step(streak, job.pause_after_failures, paused, state);
        streak = step.streak;
        if step.pause {
            paused = true;
            pause = Some(paused_after_failures_reason(streak));
        }
    }
    (streak != job.failure_streak || pause.is_some()).then(|| StreakWrite { job_id: job.id.clone(), streak, pause })
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

/// The dense buckets of a stats query from its grouped rows: `finished` as `(bucket, state,
/// count)`, `started` as `(bucket, starts, p50 lag µs, p99 lag µs)`, buckets numbered from
/// `q.from`. Rows outside the query's buckets are ignored.
pub(crate) fn run_buckets(
    q: &RunStatsQuery,
    finished: Vec<(i64, String, i64)>,
    started: Vec<(i64, i64, Option<i64>, Option<i64>)>,
) -> Vec<RunBucket> {
    let step = dur_us(q.step).max(1);
    let from = us(q.from);
    let mut out: Vec<RunBucket> = (0..i64::from(q.buckets))
        .map(|i| RunBucket { t: ts(from.saturating_add(i.saturating_mul(step))), ..Default::default() })
        .collect();
    let len = out.len();
    let slot = |b: i64| usize::try_from(b).ok().filter(|&b| b < len);
    for (b, state, n) in finished {
        let Some(i) = slot(b) else { continue };
        let n = n.max(0) as u64;
        let bucket = &mut out[i];
        match RunState::parse(&state) {
            Some(RunState::Succeeded) => bucket.succeeded += n,
            Some(RunState::Failed) => bucket.failed += n,
            Some(RunState::TimedOut) => bucket.timed_out += n,
            Some(RunState::Cancelled) => bucket.cancelled += n,
            Some(RunState::Skipped) => bucket.skipped += n,
            _ => {}
        }
    }
    // Lags in whole milliseconds, never negative (a claim takes only due runs).
    let ms = |lag: Option<i64>| lag.map(|l| (l.max(0) / 1000) as u64);
    for (b, n, p50, p99) in started {
        let Some(i) = slot(b) else { continue };
        let bucket = &mut out[i];
        bucket.started = n.max(0) as u64;
        bucket.lag_p50_ms = ms(p50);
        bucket.lag_p99_ms = ms(p99);
    }
    out
}

/// Handler queues from the grouped rows: `runs` as `(handler, pending, due, running, oldest due
/// µs)`, `workers` as `(handler, live workers)`; every handler of either, by name.
pub(crate) fn handler_queues(
    runs: Vec<(String, i64, i64, i64, Option<i64>)>,
    workers: Vec<(String, i64)>,
) -> Vec<HandlerQueue> {
    let mut by: std::collections::BTreeMap<String, HandlerQueue> = std::collections::BTreeMap::new();
    for (h, pending, due, running, oldest) in runs {
        let q = by.entry(h.clone()).or_insert_with(|| HandlerQueue { handler: h, ..Default::default() });
        q.pending = pending.max(0) as u64;
        q.due = due.max(0) as u64;
        q.running = running.max(0) as u64;
        q.oldest_due_at = oldest.map(ts);
    }
    for (h, n) in workers {
        let q = by.entry(h.clone()).or_insert_with(|| HandlerQueue { handler: h, ..Default::default() });
        q.workers += n.max(0) as u64;
    }
    by.into_values().collect()
}

/// A calendar delete refused while a trigger (of job `job_id`) names the calendar.
pub(crate) fn calendar_in_use(name: &str, job_id: &str) -> StoreError {
    StoreError::Conflict {
        code: "calendar_in_use",
        message: format!("calendar {name} is named by a trigger of job {job_id}; remove it from the trigger first"),
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

    #[test]
    fn only_unnamed_unkeyed_untriggered_submissions_stand_alone() {
        use crate::domain::job::JobRequest;
        use crate::domain::JobSpec;
        let spec = |r: JobRequest| JobSpec::from_request(JobRequest { handler: "echo".into(), ..r }).unwrap();
        let plain = spec(JobRequest::default());
        assert!(stands_alone(&plain, None));
        assert!(!stands_alone(&plain, Some("k")), "a key (the client's or a derived one) is looked up");
        assert!(!stands_alone(&spec(JobRequest { name: Some("n".into()), ..Default::default() }), None));
        let triggered: JobRequest = serde_json::from_value(
            serde_json::json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "60s"}]}),
        )
        .unwrap();
        assert!(!stands_alone(&JobSpec::from_request(triggered).unwrap(), None), "triggers may name calendars");
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
    fn failed_and_timed_out_runs_count_a_success_resets_and_the_rest_leave_the_count() {
        let step = |streak, state| streak_step(streak, Some(3), false, state);
        assert_eq!(step(0, RunState::Failed), StreakStep { streak: 1, pause: false });
        assert_eq!(step(1, RunState::TimedOut), StreakStep { streak: 2, pause: false });
        assert_eq!(step(2, RunState::Failed), StreakStep { streak: 3, pause: true }, "the third in a row pauses");
        assert_eq!(step(2, RunState::Succeeded), StreakStep { streak: 0, pause: false });
        for neither in [RunState::Cancelled, RunState::Skipped, RunState::Pending, RunState::Running] {
            assert_eq!(step(2, neither), StreakStep { streak: 2, pause: false }, "{neither:?}");
        }
        assert_eq!(
            streak_step(5, Some(3), true, RunState::Failed),
            StreakStep { streak: 6, pause: false },
            "already paused"
        );
        assert!(streak_step(0, Some(1), false, RunState::Failed).pause, "a threshold of one");
        assert_eq!(
            streak_step(7, None, false, RunState::Failed),
            StreakStep { streak: 7, pause: false },
            "no threshold"
        );
    }

    #[test]
    fn a_jobs_runs_fold_in_the_order_they_finished() {
        let job = JobStreak { id: "j".into(), pause_after_failures: Some(2), failure_streak: 1, paused: false };
        let w = streak_write(&job, [RunState::Succeeded, RunState::Failed, RunState::Cancelled, RunState::Failed]);
        assert_eq!(
            w,
            Some(StreakWrite {
                job_id: "j".into(),
                streak: 2,
                pause: Some("paused after 2 runs in a row failed".into())
            })
        );
        let w = streak_write(&job, [RunState::Failed, RunState::Succeeded]).unwrap();
        assert_eq!(
            (w.streak, w.pause.as_deref()),
            (0, Some("paused after 2 runs in a row failed")),
            "a later success resets the count but does not undo the pause"
        );
        assert_eq!(streak_write(&job, [RunState::Cancelled, RunState::Skipped]), None, "nothing changes");
        let unset = JobStreak { pause_after_failures: None, ..job.clone() };
        assert_eq!(streak_write(&unset, [RunState::Failed, RunState::Failed]), None, "not counted without a threshold");
        let paused = JobStreak { paused: true, ..job };
        assert_eq!(streak_write(&paused, [RunState::Failed]).map(|w| (w.streak, w.pause)), Some((2, None)));
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

    #[test]
    fn a_stats_window_is_whole_aligned_buckets_and_at_most_a_day_of_minutes() {
        use super::super::{StatsWindowError, MAX_STAT_BUCKETS};
        let min = Duration::from_secs(60);
        // t(0) is a multiple of a minute; 90 s in is the second minute.
        let (from, n) = RunStatsQuery::window(t(90), t(90 + 3600), min).unwrap();
        assert_eq!((from, n), (t(60), 61));
        let (from, n) = RunStatsQuery::window(t(0), t(3600), min).unwrap();
        assert_eq!((from, n), (t(0), 60));
        assert_eq!(RunStatsQuery::window(t(0), t(0), min), Err(StatsWindowError::Empty));
        assert_eq!(RunStatsQuery::window(t(0), t(60), Duration::ZERO), Err(StatsWindowError::ZeroStep));
        let day = 60 * MAX_STAT_BUCKETS as i64;
        assert!(RunStatsQuery::window(t(0), t(day), min).is_ok());
        assert_eq!(RunStatsQuery::window(t(0), t(day + 1), min), Err(StatsWindowError::TooMany(MAX_STAT_BUCKETS + 1)));
    }

    #[test]
    fn buckets_are_dense_and_rows_land_in_their_bucket() {
        let q = RunStatsQuery { from: t(0), step: Duration::from_secs(60), buckets: 3, ..Default::default() };
        let finished = vec![
            (0, "succeeded".into(), 2),
            (2, "skipped".into(), 1),
            (2, "failed".into(), 4),
            (7, "failed".into(), 9),
        ];
        let started = vec![(1, 3, Some(1_500), Some(9_999_999))];
        let b = run_buckets(&q, finished, started);
        assert_eq!(b.iter().map(|b| b.t).collect::<Vec<_>>(), vec![t(0), t(60), t(120)]);
        assert_eq!((b[0].succeeded, b[0].started, b[0].lag_p50_ms), (2, 0, None));
        assert_eq!((b[1].started, b[1].lag_p50_ms, b[1].lag_p99_ms), (3, Some(1), Some(9_999)));
        assert_eq!((b[2].skipped, b[2].failed), (1, 4));
    }

    #[test]
    fn handler_queues_merge_runs_and_workers_by_name() {
        let q = handler_queues(vec![("b".into(), 3, 1, 2, Some(5_000_000))], vec![("a".into(), 1), ("b".into(), 2)]);
        assert_eq!(q.iter().map(|h| h.handler.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!((q[0].pending, q[0].workers), (0, 1));
        assert_eq!((q[1].pending, q[1].due, q[1].running, q[1].workers), (3, 1, 2, 2));
        assert_eq!(q[1].oldest_due_at, Some(ts(5_000_000)));
    }
}
