//! Operating counts: runs per time bucket (finished by state, started, start lag) and each
//! handler's queue.

use super::*;
use crate::domain::{HandlerQueue, RunBucket};
use crate::store::RunStatsQuery;

/// Buckets of a minute from `h.now`.
fn minutes(h: &Harness, buckets: u32) -> RunStatsQuery {
    RunStatsQuery { from: h.now, step: Duration::from_secs(60), buckets, ..Default::default() }
}

/// An empty bucket at `t`.
fn empty(t: Timestamp) -> RunBucket {
    RunBucket { t, ..Default::default() }
}

/// Every bucket of the window is there, oldest first, empty ones included; a run counts in the
/// bucket it finished in by its state, an attempt in the bucket its claim was made in, and the
/// lag is claim time − due time (nearest-rank p50 and p99, in whole milliseconds). The filters
/// (namespaces, job, handler) narrow both counts.
pub async fn stats_runs_count_finishes_and_starts_per_bucket(h: Harness) {
    let once_only = || Some(retry(1, 1, 1));
    let w = h.worker(&["echo"], h.now).await;
    // Due at T+0 and T+5, both claimed at T+10: lags 10 s and 5 s.
    let j1 = h.create(JobRequest { retry: once_only(), ..job("echo") }, h.now).await;
    let j2 = h.create(JobRequest { retry: once_only(), ..job("echo") }, h.t(5.0)).await;
    let claimed = h.claim(&w.id, 10, h.t(10.0)).await;
    assert_eq!(claimed.len(), 2);
    let c1 = claimed.iter().find(|c| c.job_id == j1.id).expect("j1 claimed");
    let c2 = claimed.iter().find(|c| c.job_id == j2.id).expect("j2 claimed");
    h.complete(completion(c1, &w.id, RunState::Succeeded), h.t(20.0)).await.expect("complete");
    h.complete(completion(c2, &w.id, RunState::Failed), h.t(70.0)).await.expect("complete");
    // Another namespace: due at T+100, claimed at T+130 (lag 30 s).
    let j3 = h.create(JobRequest { namespace: Some("other".into()), ..job("echo") }, h.t(100.0)).await;
    assert_eq!(h.claim_one(&w.id, h.t(130.0)).await.job_id, j3.id);
    // Nobody serves "idle": its run is cancelled while pending, at T+125.
    let j4 = h.create(job("idle"), h.now).await;
    let r4 = h.runs(&j4.id).await.remove(0);
    h.store.run_cancel(&r4.id, h.t(125.0)).await.expect("run_cancel");

    let all = h.other.stats_runs(&minutes(&h, 4)).await.expect("stats_runs");
    let expected = vec![
        RunBucket { succeeded: 1, started: 2, lag_p50_ms: Some(5_000), lag_p99_ms: Some(10_000), ..empty(h.now) },
        RunBucket { failed: 1, ..empty(h.t(60.0)) },
        RunBucket { cancelled: 1, started: 1, lag_p50_ms: Some(30_000), lag_p99_ms: Some(30_000), ..empty(h.t(120.0)) },
        empty(h.t(180.0)),
    ];
    assert_eq!(all, expected);

    let q = RunStatsQuery { namespaces: Some(vec!["default".into()]), ..minutes(&h, 4) };
    let got = h.store.stats_runs(&q).await.expect("stats_runs by namespace");
    assert_eq!(got[2], RunBucket { cancelled: 1, ..empty(h.t(120.0)) }, "the other namespace's start is left out");
    assert_eq!(got[..2], expected[..2]);
    let q = RunStatsQuery { namespaces: Some(vec![]), ..minutes(&h, 4) };
    let got = h.store.stats_runs(&q).await.expect("stats_runs in no namespace");
    assert_eq!(got, (0..4).map(|i| empty(h.t(60.0 * f64::from(i)))).collect::<Vec<_>>());

    let q = RunStatsQuery { job_id: Some(j1.id.clone()), ..minutes(&h, 2) };
    let got = h.store.stats_runs(&q).await.expect("stats_runs by job");
    let one =
        RunBucket { succeeded: 1, started: 1, lag_p50_ms: Some(10_000), lag_p99_ms: Some(10_000), ..empty(h.now) };
    assert_eq!(got, vec![one, empty(h.t(60.0))]);

    let q = RunStatsQuery { handler: Some("idle".into()), ..minutes(&h, 3) };
    let got = h.store.stats_runs(&q).await.expect("stats_runs by handler");
    assert_eq!(got, vec![empty(h.now), empty(h.t(60.0)), RunBucket { cancelled: 1, ..empty(h.t(120.0)) }]);

    // A window that starts later numbers its buckets from its own start.
    let q = RunStatsQuery { from: h.t(60.0), ..minutes(&h, 1) };
    assert_eq!(h.store.stats_runs(&q).await.expect("stats_runs"), vec![expected[1].clone()]);
}

/// A retried attempt's lag is measured from the due time it was claimed at (after its backoff),
/// and the first attempt's from its own (1 s), not from the run's latest due time.
pub async fn stats_runs_measure_each_attempts_lag_from_its_own_due_time(h: Harness) {
    let w = h.worker(&["echo"], h.now).await;
    h.create(JobRequest { retry: Some(retry(2, 30, 30)), ..job("echo") }, h.now).await;
    let c = h.claim_one(&w.id, h.t(1.0)).await;
    h.complete(completion(&c, &w.id, RunState::Failed), h.t(2.0)).await.expect("complete");
    // Due again after its backoff (about 30 s, jittered); claimed at T+40.
    let c = h.claim_one(&w.id, h.t(40.0)).await;
    assert!(c.scheduled_for > h.t(2.0), "the retry is due later: {}", c.scheduled_for);
    let second = (h.t(40.0) - c.scheduled_for).num_milliseconds() as u64;
    let got = h.store.stats_runs(&minutes(&h, 1)).await.expect("stats_runs");
    let (p50, p99) = (second.min(1_000), second.max(1_000));
    assert_eq!((got[0].started, got[0].lag_p50_ms, got[0].lag_p99_ms), (2, Some(p50), Some(p99)));
}

/// Every handler with a pending or running run or a live worker is listed, by name: a paused
/// job's pending runs and runs not yet due count in `pending` only; `workers` counts live
/// workers only (a dead or draining one serves nobody). Namespaces narrow the run counts.
pub async fn stats_handlers_count_queues_and_live_workers(h: Harness) {
    let wa = h.worker(&["a"], h.now).await;
    let dead = h.worker(&["b"], h.now).await;
    let draining = h.worker(&["d"], h.now).await;
    h.store.worker_deregister(&draining.id, h.now).await.expect("worker_deregister");
    h.create(job("a"), h.now).await;
    h.create(job("a"), h.t(1.0)).await;
    h.create(JobRequest { paused: Some(true), ..job("a") }, h.t(2.0)).await;
    h.create(JobRequest { triggers: Some(vec![once(h.t(500.0))]), ..job("a") }, h.t(3.0)).await;
    assert_eq!(h.fire(h.t(500.0)).await.runs_pending, 1, "materialised ahead, due at T+500");
    h.create(job("b"), h.now).await;
    let gone = h.create(job("b"), h.now).await;
    let gone = h.runs(&gone.id).await.remove(0);
    h.store.run_cancel(&gone.id, h.t(4.0)).await.expect("run_cancel");
    h.create(JobRequest { namespace: Some("other".into()), ..job("x") }, h.now).await;
    assert_eq!(h.claim_one(&wa.id, h.t(50.0)).await.scheduled_for, h.now, "the oldest a");
    let wc = h.worker(&["c", "a"], h.t(60.0)).await;
    h.reap(h.t(61.0)).await;
    assert_eq!(h.store.worker_get(&dead.id).await.expect("worker_get").state, crate::domain::WorkerState::Dead);
    assert_eq!(h.store.worker_get(&wc.id).await.expect("worker_get").state, crate::domain::WorkerState::Active);

    let at = h.t(61.0);
    let a =
        HandlerQueue { handler: "a".into(), pending: 3, due: 1, running: 1, oldest_due_at: Some(h.t(1.0)), workers: 2 };
    let b = HandlerQueue { handler: "b".into(), pending: 1, due: 1, oldest_due_at: Some(h.now), ..Default::default() };
    let c = HandlerQueue { handler: "c".into(), workers: 1, ..Default::default() };
    let x = HandlerQueue { handler: "x".into(), pending: 1, due: 1, oldest_due_at: Some(h.now), ..Default::default() };
    let got = h.other.stats_handlers(None, at).await.expect("stats_handlers");
    assert_eq!(got, vec![a.clone(), b.clone(), c.clone(), x]);
    let default = vec!["default".to_string()];
    let got = h.store.stats_handlers(Some(&default), at).await.expect("stats_handlers in default");
    assert_eq!(got, vec![a.clone(), b, c.clone()]);
    let got = h.store.stats_handlers(Some(&[]), at).await.expect("stats_handlers in no namespace");
    let only_workers = vec![HandlerQueue { handler: "a".into(), workers: 2, ..Default::default() }, c];
    assert_eq!(got, only_workers, "live workers are listed whatever the namespaces");
}
