//! Leases: fencing by `(worker_id, attempt)` (guarantee 3), retries and backoff, heartbeats,
//! and the reaper's expired leases, cancels and timeouts (guarantee 4).

use super::*;
use serde_json::json;

/// A job with no trigger (one run, due at `h.now`) with this retry policy, and a worker for it.
async fn one_run(h: &Harness, max_attempts: u32) -> (Job, Worker) {
    let j = h.create(JobRequest { retry: Some(retry(max_attempts, 1, 10)), ..job("echo") }, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    (j, w)
}

/// Asserts `at` lies in `[base, base + 10 % + 1 ms]` (the backoff's jitter).
#[track_caller]
fn assert_backoff(at: Timestamp, failed_at: Timestamp, base_secs: i64) {
    let lo = failed_at + chrono::TimeDelta::seconds(base_secs);
    let hi = lo + chrono::TimeDelta::milliseconds(base_secs * 100 + 1);
    assert!(at >= lo && at <= hi, "retry at {at}: not within [{lo}, {hi}] (backoff {base_secs}s from the failure)");
}

/// The fencing guarantee: once a lease expired and another worker claimed the run again, the
/// first worker's late answer is `StaleAttempt` and changes nothing; the new holder's answer
/// is the run's result.
pub async fn complete_with_stale_attempt_is_rejected_and_changes_nothing(h: Harness) {
    let (_, a) = one_run(&h, 5).await;
    let first = h.claim_one(&a.id, h.now).await;
    assert_eq!(first.attempt, 1);

    let report = h.reap(h.t(31.0)).await;
    assert_eq!(report.expired, [(first.run_id.clone(), RunState::Pending)], "expired lease, attempts left: retried");
    let retried = h.run(&first.run_id).await;
    assert_eq!(retried.reason.as_deref().map(|r| r.contains("lease expired")), Some(true), "{retried:?}");
    assert_backoff(retried.scheduled_for, h.t(31.0), 1);

    let b = h.worker(&["echo"], h.t(32.0)).await;
    let second = h.claim_one(&b.id, h.t(33.0)).await;
    assert_eq!((second.run_id.as_str(), second.attempt), (first.run_id.as_str(), 2));

    let late = Completion { output: Some(json!({"by": "A"})), ..completion(&first, &a.id, RunState::Succeeded) };
    assert_stale(h.complete(late.clone(), h.t(34.0)).await, "A's late complete");
    let wrong_worker = Completion { lease: Lease { attempt: 2, ..late.lease.clone() }, ..late.clone() };
    assert_stale(h.complete(wrong_worker, h.t(34.0)).await, "A's complete with B's attempt");
    let hb = h.heartbeat(&a.id, &held(&[&first]), h.t(34.0)).await.expect("heartbeat");
    assert_eq!(hb.lost, vec![first.run_id.clone()], "A is told the run is no longer its");

    let r = h.run(&first.run_id).await;
    assert_eq!(
        (r.state, r.attempt, r.output.clone()),
        (RunState::Running, 2, None),
        "the stale answer changed nothing"
    );
    assert_eq!(r.worker_id.as_deref(), Some(b.id.as_str()));
    assert_eq!(r.lease_expires_at, Some(h.t(63.0)), "nor A's heartbeat");

    let ok = Completion { output: Some(json!({"by": "B"})), ..completion(&second, &b.id, RunState::Succeeded) };
    let done = h.complete(ok, h.t(35.0)).await.expect("B holds the run");
    assert_eq!((done.state, done.output.clone()), (RunState::Succeeded, Some(json!({"by": "B"}))));
    assert_stale(h.complete(late, h.t(36.0)).await, "A after B finished");
    let r = h.other.run_get(&first.run_id).await.expect("run_get");
    assert_eq!((r.state, r.attempt, r.output), (RunState::Succeeded, 2, Some(json!({"by": "B"}))));
    assert_eq!(r.finished_at, Some(h.t(35.0)));
}

/// A second complete of a finished run is `StaleAttempt` and leaves the result alone.
pub async fn second_complete_of_finished_run_is_stale(h: Harness) {
    let (_, w) = one_run(&h, 5).await;
    let c = h.claim_one(&w.id, h.now).await;
    let first = Completion { output: Some(json!({"n": 1})), ..completion(&c, &w.id, RunState::Succeeded) };
    h.complete(first, h.t(1.0)).await.expect("first complete");
    let again = Completion { output: Some(json!({"n": 2})), ..completion(&c, &w.id, RunState::Failed) };
    assert_stale(h.complete(again, h.t(2.0)).await, "second complete");
    let r = h.run(&c.run_id).await;
    assert_eq!((r.state, r.output, r.finished_at), (RunState::Succeeded, Some(json!({"n": 1})), Some(h.t(1.0))));
    assert_not_found(
        h.complete(
            completion(&ClaimedRun { run_id: "no-such-run".into(), ..c.clone() }, &w.id, RunState::Succeeded),
            h.t(3.0),
        )
        .await,
        "complete of unknown run",
    );
}

/// A failed attempt with attempts left goes back to `pending`, due after the backoff (1 s, then
/// 2 s, from the failure, plus at most 10 % jitter) and not claimable before; the last failure
/// ends `failed` with a reason saying the attempts are exhausted.
pub async fn failed_attempt_is_retried_after_backoff_then_exhausts_to_failed_with_reason(h: Harness) {
    let (_, w) = one_run(&h, 3).await;
    let mut c = h.claim_one(&w.id, h.now).await;
    let mut failed_at = h.t(5.0);
    for (attempt, backoff) in [(1, 1), (2, 2)] {
        assert_eq!(c.attempt, attempt);
        let failure = Completion { error: Some(format!("boom {attempt}")), ..completion(&c, &w.id, RunState::Failed) };
        let r = h.complete(failure, failed_at).await.expect("complete");
        assert_eq!(r.state, RunState::Pending, "attempt {attempt} of 3 failed: retried");
        assert_eq!(r.error.as_deref(), Some(format!("boom {attempt}").as_str()));
        assert!(r.reason.is_some(), "a retry says why");
        assert_eq!(r.finished_at, None);
        assert_backoff(r.scheduled_for, failed_at, backoff);
        let just_before = r.scheduled_for - chrono::TimeDelta::milliseconds(1);
        assert!(h.claim(&w.id, 10, just_before).await.is_empty(), "not claimable before the backoff");
        c = h.claim_one(&w.id, r.scheduled_for).await;
        failed_at = r.scheduled_for + chrono::TimeDelta::seconds(3);
    }
    assert_eq!(c.attempt, 3);
    let last = Completion { error: Some("boom 3".into()), ..completion(&c, &w.id, RunState::Failed) };
    let r = h.complete(last, failed_at).await.expect("complete");
    assert_eq!((r.state, r.attempt, r.finished_at), (RunState::Failed, 3, Some(failed_at)));
    let reason = r.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("attempts exhausted"), "reason: {reason}");
    assert_eq!(r.error.as_deref(), Some("boom 3"));
    assert!(h.claim(&w.id, 10, failed_at + chrono::TimeDelta::hours(1)).await.is_empty(), "never claimed a 4th time");
}

/// A worker reporting `timed_out` is retried like a failure while attempts remain; the last
/// attempt ends `timed_out`.
pub async fn complete_timed_out_is_retried_then_the_last_ends_timed_out(h: Harness) {
    let (_, w) = one_run(&h, 2).await;
    let c = h.claim_one(&w.id, h.now).await;
    let r = h.complete(completion(&c, &w.id, RunState::TimedOut), h.t(10.0)).await.expect("complete");
    assert_eq!(r.state, RunState::Pending, "an attempt left: retried");
    assert_backoff(r.scheduled_for, h.t(10.0), 1);
    let c2 = h.claim_one(&w.id, h.t(12.0)).await;
    assert_eq!(c2.attempt, 2);
    let r = h.complete(completion(&c2, &w.id, RunState::TimedOut), h.t(22.0)).await.expect("complete");
    assert_eq!((r.state, r.finished_at), (RunState::TimedOut, Some(h.t(22.0))));
    assert!(r.reason.is_some(), "a timed-out run says why");
}

/// A last attempt whose lease expires ends `failed` with reason `lease expired`; before the
/// lease ends the reaper leaves it alone.
pub async fn expired_lease_on_last_attempt_ends_failed_with_reason_lease_expired(h: Harness) {
    let (_, w) = one_run(&h, 1).await;
    let c = h.claim_one(&w.id, h.now).await;
    let early = h.reap(h.t(29.0)).await;
    assert!(early.expired.is_empty(), "the lease runs until T+30: {early:?}");
    assert_eq!(h.run(&c.run_id).await.state, RunState::Running);

    let report = h.reap(h.t(31.0)).await;
    assert_eq!(report.expired, [(c.run_id.clone(), RunState::Failed)]);
    let r = h.run(&c.run_id).await;
    assert_eq!(
        (r.state, r.reason.as_deref(), r.finished_at),
        (RunState::Failed, Some("lease expired"), Some(h.t(31.0)))
    );
    assert!(h.claim(&w.id, 10, h.t(60.0)).await.is_empty());
    assert_stale(h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(32.0)).await, "complete after expiry");
    assert!(h.reap(h.t(90.0)).await.expired.is_empty(), "a run expires once");
}

/// A heartbeat extends the leases of the runs still held at those attempts, lists those to
/// cancel, and lists as lost the ones it does not hold (wrong attempt, other worker, unknown).
pub async fn heartbeat_extends_lease_and_reports_lost_and_cancel(h: Harness) {
    h.create(job("echo"), h.now).await;
    h.create(job("echo"), h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let claims = h.claim(&w.id, 2, h.now).await;
    assert_eq!(claims.len(), 2);
    let (r1, r2) = (&claims[0], &claims[1]);

    let hb = h.heartbeat(&w.id, &held(&[r1, r2]), h.t(20.0)).await.expect("heartbeat");
    assert_eq!(hb, HeartbeatOutcome { lease_expires_at: Some(h.t(50.0)), cancel: vec![], lost: vec![] });
    assert_eq!(h.run(&r1.run_id).await.lease_expires_at, Some(h.t(50.0)));
    assert_eq!(h.store.worker_get(&w.id).await.expect("worker_get").last_heartbeat, h.t(20.0));
    assert!(h.reap(h.t(40.0)).await.expired.is_empty(), "the extended leases have not expired");

    h.store.run_cancel(&r2.run_id, h.t(41.0)).await.expect("run_cancel");
    let hb = h.heartbeat(&w.id, &held(&[r1, r2]), h.t(42.0)).await.expect("heartbeat");
    assert_eq!((hb.cancel.clone(), hb.lost.clone()), (vec![r2.run_id.clone()], vec![]));
    assert_eq!(h.run(&r1.run_id).await.lease_expires_at, Some(h.t(72.0)));

    let stale = vec![(r1.run_id.clone(), 2), ("no-such-run".to_string(), 1)];
    let hb = h.heartbeat(&w.id, &stale, h.t(43.0)).await.expect("heartbeat");
    assert_eq!(sorted_ids(hb.lost.iter().map(String::as_str)), sorted_ids([r1.run_id.as_str(), "no-such-run"]));
    let other = h.worker(&["echo"], h.t(43.0)).await;
    let hb = h.heartbeat(&other.id, &held(&[r1]), h.t(44.0)).await.expect("heartbeat");
    assert_eq!(hb.lost, vec![r1.run_id.clone()], "another worker does not hold it");
    assert_eq!(h.run(&r1.run_id).await.lease_expires_at, Some(h.t(72.0)), "lost heartbeats extend nothing");
}

/// A worker silent for 2 × lease is `dead` and its runs are recovered; when it heartbeats again
/// it is `active` again and every recovered run it lists comes back as lost.
pub async fn heartbeat_from_dead_worker_revives_it_and_lists_recovered_runs_as_lost(h: Harness) {
    let (_, a) = one_run(&h, 5).await;
    let c = h.claim_one(&a.id, h.now).await;
    let report = h.reap(h.t(61.0)).await;
    assert_eq!(report.workers_dead, 1);
    assert_eq!(report.expired, [(c.run_id.clone(), RunState::Pending)], "its run is recovered");
    assert_eq!(h.store.worker_get(&a.id).await.expect("worker_get").state, crate::domain::WorkerState::Dead);

    let hb = h.heartbeat(&a.id, &held(&[&c]), h.t(62.0)).await.expect("a dead worker's heartbeat is answered");
    assert_eq!(hb.lost, vec![c.run_id.clone()]);
    assert!(hb.cancel.is_empty());
    let back = h.store.worker_get(&a.id).await.expect("worker_get");
    assert_eq!((back.state, back.last_heartbeat), (crate::domain::WorkerState::Active, h.t(62.0)));
    assert_eq!(h.run(&c.run_id).await.state, RunState::Pending, "the heartbeat does not take the run back");

    let b = h.worker(&["echo"], h.t(62.0)).await;
    let again = h.claim_one(&b.id, h.t(70.0)).await;
    assert_eq!((again.run_id.as_str(), again.attempt), (c.run_id.as_str(), 2));
}

/// Cancelling a running run flags it `cancel_requested` (told at the next heartbeat); if its
/// lease then expires it ends `cancelled`, never retried.
pub async fn cancel_running_sets_cancel_requested_and_lease_expiry_ends_cancelled_without_retry(h: Harness) {
    let (_, w) = one_run(&h, 5).await;
    let c = h.claim_one(&w.id, h.now).await;
    let r = h.store.run_cancel(&c.run_id, h.t(1.0)).await.expect("run_cancel");
    assert_eq!((r.state, r.cancel_requested), (RunState::Running, true));
    let hb = h.heartbeat(&w.id, &held(&[&c]), h.t(2.0)).await.expect("heartbeat");
    assert_eq!(hb.cancel, vec![c.run_id.clone()]);

    let report = h.reap(h.t(40.0)).await;
    assert_eq!(report.expired, [(c.run_id.clone(), RunState::Cancelled)], "no retry after a cancel");
    let r = h.run(&c.run_id).await;
    assert_eq!((r.state, r.finished_at), (RunState::Cancelled, Some(h.t(40.0))));
    assert!(r.reason.is_some());
    assert!(h.claim(&w.id, 10, h.t(100.0)).await.is_empty());
    assert_stale(h.complete(completion(&c, &w.id, RunState::Cancelled), h.t(41.0)).await, "complete after expiry");
}

/// An attempt that overruns its timeout (plus grace) with no report is recorded by the reaper:
/// retried like a failure while attempts remain, the last one ends `timed_out`.
pub async fn timeout_overrun_is_recorded_timed_out_by_the_reaper(h: Harness) {
    let j = h
        .create(
            JobRequest { timeout: Some(Duration::from_secs(10)), retry: Some(retry(2, 1, 10)), ..job("echo") },
            h.now,
        )
        .await;
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.now).await;
    assert_eq!(c.job_id, j.id);
    assert!(h.reap(h.t(14.0)).await.timed_out.is_empty(), "within timeout + grace");
    let report = h.reap(h.t(16.0)).await;
    assert_eq!(report.timed_out, [(c.run_id.clone(), RunState::Pending)], "an attempt left: retried");
    assert!(report.expired.is_empty(), "the lease (T+30) has not expired");
    let r = h.run(&c.run_id).await;
    assert!(r.reason.is_some());
    assert_backoff(r.scheduled_for, h.t(16.0), 1);

    let c2 = h.claim_one(&w.id, h.t(20.0)).await;
    assert_eq!(c2.attempt, 2);
    assert!(h.reap(h.t(34.0)).await.timed_out.is_empty(), "the second attempt's own timeout counts from its start");
    let report = h.reap(h.t(36.0)).await;
    assert_eq!(report.timed_out, [(c.run_id.clone(), RunState::TimedOut)]);
    let r = h.run(&c.run_id).await;
    assert_eq!((r.state, r.finished_at), (RunState::TimedOut, Some(h.t(36.0))));
    assert!(r.reason.is_some(), "a timed-out run says why");
    assert_stale(h.complete(completion(&c2, &w.id, RunState::Succeeded), h.t(37.0)).await, "complete after timeout");
}

/// Attempt history: every attempt with its worker (id and name), its times, its outcome and
/// its error; an expired lease is `lost` at the moment the reaper recovered it, with
/// `"lease expired"`. Runs carry the name of their latest attempt's worker.
pub async fn attempts_record_every_attempt_with_worker_outcome_and_error(h: Harness) {
    let j = h.create(JobRequest { retry: Some(retry(3, 1, 10)), ..job("echo") }, h.now).await;
    let run = h.runs(&j.id).await.remove(0);
    assert_eq!(h.store.run_attempts(&run.id).await.expect("run_attempts"), [], "never claimed");
    let handlers = ["echo".to_string()];
    let a = h.store.worker_register("alpha", &handlers, 8, None, h.now).await.expect("register");
    let c1 = h.claim_one(&a.id, h.now).await;
    let r = h.run(&run.id).await;
    assert_eq!((r.worker_id.as_deref(), r.worker_name.as_deref()), (Some(a.id.as_str()), Some("alpha")));
    let failed = Completion { error: Some("boom".into()), ..completion(&c1, &a.id, RunState::Failed) };
    h.complete(failed, h.t(1.0)).await.expect("complete");

    let b = h.store.worker_register("beta", &handlers, 8, None, h.t(2.0)).await.expect("register");
    let c2 = h.claim_one(&b.id, h.t(3.0)).await;
    assert_eq!(c2.attempt, 2);
    let report = h.reap(h.t(40.0)).await;
    assert_eq!(report.expired, [(run.id.clone(), RunState::Pending)]);

    let c = h.store.worker_register("gamma", &handlers, 8, None, h.t(41.0)).await.expect("register");
    let c3 = h.claim_one(&c.id, h.t(50.0)).await;
    let attempts = h.other.run_attempts(&run.id).await.expect("run_attempts");
    let got: Vec<_> = attempts
        .iter()
        .map(|x| {
            (
                x.attempt,
                x.worker_id.as_str(),
                x.worker_name.as_str(),
                x.started_at,
                x.finished_at,
                x.state,
                x.error.as_deref(),
            )
        })
        .collect();
    use crate::domain::AttemptState as S;
    assert_eq!(
        got,
        [
            (1, a.id.as_str(), "alpha", h.now, Some(h.t(1.0)), S::Failed, Some("boom")),
            (2, b.id.as_str(), "beta", h.t(3.0), Some(h.t(40.0)), S::Lost, Some("lease expired")),
            (3, c.id.as_str(), "gamma", h.t(50.0), None, S::Running, None),
        ],
        "oldest first, the running one open"
    );
    h.complete(completion(&c3, &c.id, RunState::Succeeded), h.t(51.0)).await.expect("complete");
    let last = h.store.run_attempts(&run.id).await.expect("run_attempts").pop().expect("three attempts");
    assert_eq!((last.state, last.finished_at, last.error), (S::Succeeded, Some(h.t(51.0)), None));
    assert_eq!(h.run(&run.id).await.worker_name.as_deref(), Some("gamma"));
    assert_not_found(h.store.run_attempts("no-such-run").await, "attempts of unknown run");
}

/// A cancel the worker answers, and a worker declared dead, end their attempts as `cancelled`
/// and `lost`.
pub async fn attempts_of_cancelled_and_dead_worker_runs(h: Harness) {
    let (j, w) = one_run(&h, 1).await;
    let c = h.claim_one(&w.id, h.now).await;
    h.store.run_cancel(&c.run_id, h.t(1.0)).await.expect("run_cancel");
    h.complete(completion(&c, &w.id, RunState::Cancelled), h.t(2.0)).await.expect("complete");
    let a = h.store.run_attempts(&c.run_id).await.expect("run_attempts");
    assert_eq!((a.len(), a[0].state, a[0].finished_at), (1, crate::domain::AttemptState::Cancelled, Some(h.t(2.0))));

    h.store.job_run_now(&j.id, h.t(3.0)).await.expect("run now");
    let c = h.claim_one(&w.id, h.t(3.0)).await;
    // Silent past DEAD_AFTER: the worker is dead, its run recovered.
    let report = h.reap(h.t(3.0 + 61.0)).await;
    assert_eq!(report.workers_dead, 1);
    let a = h.store.run_attempts(&c.run_id).await.expect("run_attempts");
    assert_eq!(
        (a[0].state, a[0].finished_at, a[0].error.as_deref()),
        (crate::domain::AttemptState::Lost, Some(h.t(64.0)), Some("lease expired"))
    );
}

/// A failure the worker marks final (`"retry": false`: e.g. a command its allow-list refuses)
/// ends the run at once with its error as the reason, whatever attempts are left; it counts
/// toward `pause_after_failures` like any run that ends failed.
pub async fn complete_marked_final_fails_at_once_and_is_not_retried(h: Harness) {
    let r =
        crate::domain::job::JobRequest { retry: Some(retry(3, 1, 1)), pause_after_failures: Some(1), ..job("shell") };
    let j = h.create(r, h.now).await;
    let w = h.worker(&["shell"], h.now).await;
    let c = h.claim_one(&w.id, h.t(1.0)).await;
    let refused = Completion {
        error: Some("command not allowed".into()),
        no_retry: true,
        ..completion(&c, &w.id, RunState::Failed)
    };
    let run = h.complete(refused, h.t(2.0)).await.expect("complete");
    assert_eq!((run.state, run.attempt), (RunState::Failed, 1), "not retried, with two attempts left");
    assert_eq!(run.reason.as_deref(), Some("command not allowed"));
    assert_eq!(run.finished_at, Some(h.t(2.0)));
    assert!(h.claim(&w.id, 10, h.t(100.0)).await.is_empty(), "nothing comes back to claim");
    let job = h.other.job_get(&j.id, h.t(3.0)).await.expect("job_get");
    assert_eq!(job.paused_reason.as_deref(), Some("paused after 1 runs in a row failed"));
}
