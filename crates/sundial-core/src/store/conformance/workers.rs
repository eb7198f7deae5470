//! Workers: registration, liveness (claims and heartbeats are signs of life), death and
//! deregistration.

use super::*;
use crate::domain::WorkerState;

/// A registered worker reads back as registered (`active`, no runs), on either handle; the
/// list is newest first.
pub async fn register_then_get_and_list_newest_first(h: Harness) {
    let handlers = vec!["a".to_string(), "b".to_string()];
    let w1 = h.store.worker_register("w1", &handlers, 8, None, h.now).await.expect("worker_register");
    assert_eq!((w1.name.as_str(), w1.handlers.clone(), w1.capacity), ("w1", handlers.clone(), 8));
    assert_eq!((w1.state, w1.last_heartbeat, w1.running, w1.created_at), (WorkerState::Active, h.now, 0, h.now));
    let w2 = h.store.worker_register("w2", &["c".to_string()], 2, None, h.t(1.0)).await.expect("worker_register");

    let got = h.other.worker_get(&w1.id).await.expect("worker_get on the other handle");
    assert_eq!((got.id, got.name, got.handlers, got.capacity), (w1.id.clone(), "w1".to_string(), handlers, 8));
    let listed = h.other.worker_list().await.expect("worker_list");
    assert_eq!(listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(), [w2.id.as_str(), w1.id.as_str()]);

    h.create(job("a"), h.now).await;
    h.claim_one(&w1.id, h.t(2.0)).await;
    let listed = h.store.worker_list().await.expect("worker_list");
    let running: Vec<u64> = listed.iter().map(|w| w.running).collect();
    assert_eq!(running, [0, 1], "running counts the runs a worker holds");
    assert_not_found(h.store.worker_get("no-such-worker").await, "get of unknown worker");
}

/// A worker silent for more than 2 × lease is marked `dead`; a claim (even an empty one) or a
/// heartbeat (even with no runs) is a sign of life.
pub async fn silent_worker_is_marked_dead_after_twice_the_lease(h: Harness) {
    let claimer = h.worker(&["echo"], h.now).await;
    let beater = h.worker(&["echo"], h.now).await;
    let silent = h.worker(&["echo"], h.now).await;
    let report = h.reap(h.t(59.0)).await;
    assert_eq!(report.workers_dead, 0, "silent for 59 s < 2 × lease");

    assert!(h.claim(&claimer.id, 10, h.t(30.0)).await.is_empty());
    let hb = h.heartbeat(&beater.id, &[], h.t(50.0)).await.expect("empty heartbeat");
    assert!(hb.lost.is_empty() && hb.cancel.is_empty());

    let report = h.reap(h.t(61.0)).await;
    assert_eq!(report.workers_dead, 1, "only the silent worker: {report:?}");
    let state = |id: String| {
        let store = h.store.clone();
        async move { store.worker_get(&id).await.expect("worker_get").state }
    };
    assert_eq!(state(silent.id.clone()).await, WorkerState::Dead);
    assert_eq!(state(claimer.id.clone()).await, WorkerState::Active);
    assert_eq!(state(beater.id.clone()).await, WorkerState::Active);

    let report = h.reap(h.t(91.0)).await;
    assert_eq!(report.workers_dead, 1, "the claimer, last seen at T+30: {report:?}");
    assert_eq!(state(claimer.id.clone()).await, WorkerState::Dead);
    assert_eq!(state(beater.id.clone()).await, WorkerState::Active, "last seen at T+50");
    assert_eq!(h.reap(h.t(111.0)).await.workers_dead, 1, "the beater; a dead worker is not counted twice");

    let listed = h.store.worker_list().await.expect("worker_list");
    assert!(listed.iter().all(|w| w.state == WorkerState::Dead), "{listed:?}");
}

/// Claims and heartbeats by an unknown worker, or one that deregistered, are `NotFound`.
pub async fn claim_or_heartbeat_by_unknown_or_deregistered_worker_is_not_found(h: Harness) {
    h.create(job("echo"), h.now).await;
    let p = ClaimParams { worker_id: "no-such-worker".into(), max: 1, lease: LEASE, now: h.now };
    assert_not_found(h.store.run_claim(&p).await, "claim by unknown worker");
    assert_not_found(h.heartbeat("no-such-worker", &[], h.now).await, "heartbeat by unknown worker");
    assert_not_found(h.store.worker_deregister("no-such-worker", h.now).await, "deregister of unknown worker");

    let w = h.worker(&["echo"], h.now).await;
    h.store.worker_deregister(&w.id, h.t(1.0)).await.expect("worker_deregister");
    let p = ClaimParams { worker_id: w.id.clone(), max: 1, lease: LEASE, now: h.t(2.0) };
    assert_not_found(h.store.run_claim(&p).await, "claim by deregistered worker");
    assert_not_found(h.heartbeat(&w.id, &[], h.t(2.0)).await, "heartbeat by deregistered worker");

    let other = h.worker(&["echo"], h.t(3.0)).await;
    assert_eq!(h.claim(&other.id, 10, h.t(3.0)).await.len(), 1, "the run was left for live workers");
}

/// A deregistered worker drains: it claims nothing new, but what it holds it may still complete.
pub async fn deregistered_worker_still_completes_what_it_holds(h: Harness) {
    h.create(job("echo"), h.now).await;
    h.create(job("echo"), h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.now).await;
    h.store.worker_deregister(&w.id, h.t(1.0)).await.expect("worker_deregister");
    assert_eq!(h.store.worker_get(&w.id).await.expect("worker_get").state, WorkerState::Draining);

    let done = h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(2.0)).await.expect("complete while draining");
    assert_eq!(done.state, RunState::Succeeded);
    let p = ClaimParams { worker_id: w.id.clone(), max: 1, lease: LEASE, now: h.t(3.0) };
    assert_not_found(h.store.run_claim(&p).await, "a draining worker claims nothing new");
}

/// A worker dead and silent since before the cutoff, holding nothing, is forgotten (deleted);
/// live and recently dead workers and a dead worker that still holds a run are kept.
pub async fn forget_dead_deletes_only_dead_workers_silent_past_the_cutoff(h: Harness) {
    let old = h.worker(&["echo"], h.now).await;
    let holder = h.worker(&["hold"], h.now).await;
    h.create(job("hold"), h.now).await;
    h.claim_one(&holder.id, h.now).await;
    let recent = h.worker(&["echo"], h.t(100.0)).await;
    let live = h.worker(&["echo"], h.t(100.0)).await;
    h.heartbeat(&live.id, &[], h.t(150.0)).await.expect("heartbeat");
    // Silent before T+110 is dead; with limit 0 the holder's run is not recovered, so it stays
    // running (as when the reaper has not reached it yet).
    let p = ReapParams { now: h.t(170.0), timeout_grace: TIMEOUT_GRACE, dead_after: DEAD_AFTER, limit: 0 };
    h.store.run_reap(&p).await.expect("run_reap marking workers dead only");
    let state = |id: String| {
        let store = h.store.clone();
        async move { store.worker_get(&id).await.map(|w| w.state) }
    };
    assert_eq!(state(recent.id.clone()).await.expect("recent"), WorkerState::Dead);
    assert_eq!(state(holder.id.clone()).await.expect("holder"), WorkerState::Dead);
    assert_eq!(state(old.id.clone()).await.expect("old"), WorkerState::Dead);

    let forgotten = h.store.worker_forget_dead(h.t(50.0), 100).await.expect("worker_forget_dead");
    assert_eq!(forgotten, 1, "only the old, idle dead worker");
    assert_not_found(state(old.id.clone()).await, "a forgotten worker");
    assert_not_found(h.heartbeat(&old.id, &[], h.t(171.0)).await, "a forgotten worker's heartbeat");
    assert_eq!(state(holder.id.clone()).await.expect("holder"), WorkerState::Dead, "it holds a running run");
    assert_eq!(state(recent.id.clone()).await.expect("recent"), WorkerState::Dead, "silent since after the cutoff");
    assert_eq!(state(live.id.clone()).await.expect("live"), WorkerState::Active);
    let listed = h.other.worker_list().await.expect("worker_list");
    assert_eq!(listed.len(), 3);
}

/// A worker registered for some namespaces (those of its token) claims only runs of jobs in
/// them, though other namespaces' runs are due and older; the rest stay for other workers.
pub async fn claim_by_a_namespace_bound_worker_leases_only_runs_of_its_namespaces(h: Harness) {
    for (i, ns) in ["default", "billing", "other", "billing", "default"].iter().enumerate() {
        let r = JobRequest { namespace: Some(ns.to_string()), ..job("echo") };
        h.create(r, h.t(i as f64)).await;
    }
    let billing = vec!["billing".to_string()];
    let bound = h.store.worker_register("b", &["echo".to_string()], 8, Some(&billing), h.now).await.expect("register");
    assert_eq!(h.other.worker_get(&bound.id).await.expect("worker_get").namespaces, Some(billing.clone()));
    let got = h.claim(&bound.id, 10, h.t(10.0)).await;
    let mut namespaces = Vec::new();
    for c in &got {
        namespaces.push(h.run(&c.run_id).await.namespace);
    }
    assert_eq!(namespaces, vec!["billing", "billing"], "only billing runs, though older others are due");
    assert!(h.claim(&bound.id, 10, h.t(11.0)).await.is_empty(), "nothing else of billing");
    let none: Vec<String> = Vec::new();
    let nowhere = h.store.worker_register("n", &["echo".to_string()], 8, Some(&none), h.now).await.expect("register");
    assert!(h.claim(&nowhere.id, 10, h.t(11.0)).await.is_empty(), "a worker of no namespace claims nothing");
    let all = h.worker(&["echo"], h.now).await;
    assert_eq!(all.namespaces, None, "registered for every namespace");
    assert_eq!(h.claim(&all.id, 10, h.t(12.0)).await.len(), 3, "the other namespaces' runs were left");
}
