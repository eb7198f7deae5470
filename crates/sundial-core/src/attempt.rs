//! How an attempt's end settles its run: finished, or back to `pending` for another attempt
//! after the backoff. One function for worker completions and the reaper alike, so a failed,
//! timed-out or expired attempt is retried by the same rule.

use crate::domain::{AttemptState, RetryPolicy, RunState, Timestamp};

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The worker reported this state.
    Reported(RunState),
    /// The worker reported this state and that another attempt cannot help (e.g. a command its
    /// allow-list refuses): a failure is not retried.
    Final(RunState),
    /// The lease ran out (the worker went silent or died).
    LeaseExpired,
    /// The attempt overran its timeout and the worker never reported.
    TimeoutOverrun,
}

/// The facts about the run the rule needs.
#[derive(Debug, Clone, Copy)]
pub struct AttemptInfo {
    /// The attempt that ended (1-based).
    pub attempt: u32,
    /// The job's retry policy, as snapshotted on the run.
    pub retry: RetryPolicy,
    /// A cancel was requested while it ran.
    pub cancel_requested: bool,
}

/// What the run becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// New state.
    pub state: RunState,
    /// For a retry: the new `scheduled_for`.
    pub retry_at: Option<Timestamp>,
    /// Why.
    pub reason: Option<String>,
}

/// Settles an attempt that ended at `now`. Backoff counts from the failure.
pub fn settle(info: AttemptInfo, ended: Ended, error: Option<&str>, now: Timestamp) -> Settlement {
    let failed_as = match ended {
        Ended::Reported(RunState::Succeeded) | Ended::Final(RunState::Succeeded) => {
            return Settlement { state: RunState::Succeeded, retry_at: None, reason: None }
        }
        Ended::Reported(RunState::Cancelled) | Ended::Final(RunState::Cancelled) => {
            let reason = if info.cancel_requested { "cancel requested" } else { "cancelled by the worker" };
            return Settlement { state: RunState::Cancelled, retry_at: None, reason: Some(reason.into()) };
        }
        Ended::Reported(RunState::TimedOut) | Ended::Final(RunState::TimedOut) | Ended::TimeoutOverrun => {
            RunState::TimedOut
        }
        Ended::Reported(_) | Ended::Final(_) | Ended::LeaseExpired => RunState::Failed,
    };
    let what = match ended {
        Ended::LeaseExpired => "lease expired".to_string(),
        Ended::TimeoutOverrun => "timed out (no report from the worker)".to_string(),
        Ended::Reported(RunState::TimedOut) | Ended::Final(RunState::TimedOut) => "timed out".to_string(),
        _ => match error {
            Some(e) => format!("failed: {e}"),
            None => "failed".to_string(),
        },
    };
    if info.cancel_requested {
        // A cancelled run is never retried, whatever its last attempt did.
        return Settlement {
            state: RunState::Cancelled,
            retry_at: None,
            reason: Some(format!("cancel requested; attempt {} {what}", info.attempt)),
        };
    }
    if let Ended::Final(_) = ended {
        // API.md: a refused command fails at once, with its error as the reason.
        let reason =
            error.map(str::to_string).unwrap_or_else(|| format!("attempt {} {what}; not retried", info.attempt));
        return Settlement { state: failed_as, retry_at: None, reason: Some(reason) };
    }
    if info.attempt < info.retry.max_attempts {
        let delay = info.retry.backoff_with_jitter(info.attempt);
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let retry_at = crate::clock::truncate_micros(retry_at);
        return Settlement {
            state: RunState::Pending,
            retry_at: Some(retry_at),
            reason: Some(format!(
                "attempt {} of {} {what}; retry after {}",
                info.attempt,
                info.retry.max_attempts,
                crate::domain::duration::format(std::time::Duration::from_millis(delay.as_millis() as u64))
            )),
        };
    }
    let reason = match ended {
        // API.md: a last attempt that loses its lease ends `failed` with reason `lease expired`.
        Ended::LeaseExpired => "lease expired".to_string(),
        _ => format!("attempt {} of {} {what}; attempts exhausted", info.attempt, info.retry.max_attempts),
    };
    Settlement { state: failed_as, retry_at: None, reason: Some(reason) }
}

/// How the attempt itself ended, for its history row: its outcome and error. An expired lease
/// (a silent or dead worker) is `lost`, with the error `"lease expired"`.
pub fn attempt_outcome(ended: Ended, error: Option<&str>) -> (AttemptState, Option<String>) {
    match ended {
        Ended::LeaseExpired => (AttemptState::Lost, Some("lease expired".to_string())),
        Ended::TimeoutOverrun => {
            (AttemptState::TimedOut, Some(error.unwrap_or("timed out (no report from the worker)").to_string()))
        }
        Ended::Reported(state) | Ended::Final(state) => {
            let outcome = match state {
                RunState::Succeeded => AttemptState::Succeeded,
                RunState::TimedOut => AttemptState::TimedOut,
                RunState::Cancelled => AttemptState::Cancelled,
                // Workers report only finished states; anything else counts as a failure.
                _ => AttemptState::Failed,
            };
            (outcome, error.map(str::to_string))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_the_worker_marks_final_is_not_retried_and_its_error_is_the_reason() {
        let at = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let first = info(1, 3);
        let s = settle(first, Ended::Final(RunState::Failed), Some("command not allowed"), at);
        assert_eq!((s.state, s.retry_at, s.reason.as_deref()), (RunState::Failed, None, Some("command not allowed")));
        assert_eq!(settle(first, Ended::Final(RunState::TimedOut), None, at).state, RunState::TimedOut);
        assert_eq!(settle(first, Ended::Final(RunState::Succeeded), None, at).state, RunState::Succeeded);
        let cancelling = AttemptInfo { cancel_requested: true, ..first };
        assert_eq!(settle(cancelling, Ended::Final(RunState::Failed), None, at).state, RunState::Cancelled);
        assert_eq!(
            settle(first, Ended::Reported(RunState::Failed), None, at).state,
            RunState::Pending,
            "unmarked: retried"
        );
    }

    #[test]
    fn an_attempts_outcome_is_what_the_worker_said_or_lost_when_its_lease_ran_out() {
        assert_eq!(attempt_outcome(Ended::LeaseExpired, None), (AttemptState::Lost, Some("lease expired".into())));
        assert_eq!(
            attempt_outcome(Ended::Reported(RunState::Failed), Some("boom")),
            (AttemptState::Failed, Some("boom".into()))
        );
        assert_eq!(attempt_outcome(Ended::Reported(RunState::Succeeded), None), (AttemptState::Succeeded, None));
        assert_eq!(attempt_outcome(Ended::Reported(RunState::Cancelled), None), (AttemptState::Cancelled, None));
        assert_eq!(attempt_outcome(Ended::TimeoutOverrun, None).0, AttemptState::TimedOut);
    }
    use std::time::Duration;

    fn info(attempt: u32, max: u32) -> AttemptInfo {
        AttemptInfo {
            attempt,
            retry: RetryPolicy {
                max_attempts: max,
                initial_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(10),
            },
            cancel_requested: false,
        }
    }

    #[test]
    fn failed_attempt_with_attempts_left_is_retried_after_exponential_backoff_with_jitter() {
        let now = chrono::Utc::now();
        for (attempt, base) in [(1u32, 1i64), (2, 2), (3, 4), (4, 8), (5, 10), (6, 10)] {
            let s = settle(info(attempt, 10), Ended::Reported(RunState::Failed), Some("boom"), now);
            assert_eq!(s.state, RunState::Pending);
            let delay = s.retry_at.unwrap() - now;
            let lo = chrono::Duration::seconds(base);
            let hi = lo + lo / 10 + chrono::Duration::milliseconds(1);
            assert!(delay >= lo && delay <= hi, "attempt {attempt}: {delay} not in [{lo}, {hi}]");
            assert!(s.reason.unwrap().contains("boom"));
        }
    }

    #[test]
    fn last_failed_attempt_ends_failed_with_reason() {
        let s = settle(info(3, 3), Ended::Reported(RunState::Failed), Some("boom"), chrono::Utc::now());
        assert_eq!(s.state, RunState::Failed);
        assert!(s.reason.unwrap().contains("attempts exhausted"));
    }

    #[test]
    fn last_attempt_losing_its_lease_ends_failed_lease_expired() {
        let s = settle(info(2, 2), Ended::LeaseExpired, None, chrono::Utc::now());
        assert_eq!((s.state, s.reason.as_deref()), (RunState::Failed, Some("lease expired")));
    }

    #[test]
    fn last_timed_out_attempt_ends_timed_out() {
        let s = settle(info(1, 1), Ended::TimeoutOverrun, None, chrono::Utc::now());
        assert_eq!(s.state, RunState::TimedOut);
    }

    #[test]
    fn cancel_requested_run_is_never_retried() {
        let mut i = info(1, 5);
        i.cancel_requested = true;
        let s = settle(i, Ended::LeaseExpired, None, chrono::Utc::now());
        assert_eq!(s.state, RunState::Cancelled);
        assert!(s.retry_at.is_none());
    }
}
