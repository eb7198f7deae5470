//! Runs: claims (order, due-ness, handlers, attempts, leases), cancel, prune and listing.

use super::*;
use crate::domain::WorkerState;
use serde_json::json;

fn claimed_jobs(claims: &[ClaimedRun]) -> Vec<String> {
    sorted_ids(claims.iter().map(|c| c.job_id.as_str()))
}

/// Claims hand out due runs by `priority` (higher first), then `scheduled_for` (older first).
pub async fn claim_orders_by_priority_then_scheduled_for(h: Harness) {
    let a = h.create(JobRequest { priority: Some(0), ..job("echo") }, h.t(0.0)).await;
    let c = h.create(JobRequest { priority: Some(5), ..job("echo") }, h.t(1.0)).await;
    let b = h.create(JobRequest { priority: Some(5), ..job("echo") }, h.t(2.0)).await;
    let d = h.create(JobRequest { priority: Some(0), ..job("echo") }, h.t(3.0)).await;
    let w = h.worker(&["echo"], h.now).await;

    let first_two = h.claim(&w.id, 2, h.t(10.0)).await;
    assert_eq!(claimed_jobs(&first_two), sorted_ids([b.id.as_str(), c.id.as_str()]), "the two priority-5 runs first");
    assert_eq!(h.claim_one(&w.id, h.t(10.0)).await.job_id, a.id, "then the older priority-0 run");
    assert_eq!(h.claim_one(&w.id, h.t(10.0)).await.job_id, d.id);
    assert!(h.claim(&w.id, 10, h.t(10.0)).await.is_empty());

    // Within one priority, one at a time: older first.
    let e = h.create(JobRequest { priority: Some(1), ..job("echo") }, h.t(5.0)).await;
    let f = h.create(JobRequest { priority: Some(1), ..job("echo") }, h.t(4.0)).await;
    assert_eq!(h.claim_one(&w.id, h.t(10.0)).await.job_id, f.id);
    assert_eq!(h.claim_one(&w.id, h.t(10.0)).await.job_id, e.id);
}

/// Runs that become ready where claims have already passed (a resumed job's run, an operator's
/// retry, a higher priority) go to the very next claim, in order. PostgreSQL's claims start where
/// the last one stopped (`store::cursor`); each of these writes sends them back to the head.
pub async fn claims_take_runs_made_ready_behind_the_last_claim_at_once(h: Harness) {
    let early = h.create(JobRequest { priority: Some(5), retry: Some(retry(1, 1, 1)), ..job("echo") }, h.t(0.1)).await;
    let paused = h.create(JobRequest { paused: Some(true), ..job("echo") }, h.t(0.2)).await;
    let mut rest = Vec::new();
    for i in 0..3 {
        rest.push(h.create(job("echo"), h.t(0.3 + 0.1 * f64::from(i))).await);
    }
    let w = h.worker(&["echo"], h.now).await;
    let at = h.t(1.0);
    let first = h.claim_one(&w.id, at).await;
    assert_eq!(first.job_id, early.id);
    assert_eq!(h.claim_one(&w.id, at).await.job_id, rest[0].id);

    h.store.job_set_paused(&paused.id, false, at).await.expect("resume");
    assert_eq!(h.claim_one(&w.id, at).await.job_id, paused.id, "the resumed run, due before rest[0]");

    h.complete(completion(&first, &w.id, RunState::Failed), at).await.expect("complete");
    h.store.run_retry(&first.run_id, at).await.expect("run_retry");
    assert_eq!(h.claim_one(&w.id, at).await.job_id, early.id, "the retried run, of priority 5");

    let urgent = h.create(JobRequest { priority: Some(9), ..job("echo") }, at).await;
    assert_eq!(h.claim_one(&w.id, at).await.job_id, urgent.id, "a new run of priority 9");
    assert_eq!(h.claim_one(&w.id, at).await.job_id, rest[1].id);
    assert_eq!(h.claim_one(&w.id, at).await.job_id, rest[2].id);
    assert!(h.claim(&w.id, 10, at).await.is_empty());

    // A run of priority 7 stored ahead, not yet due when a claim passes its place.
    let ahead = JobRequest { priority: Some(7), triggers: Some(vec![once(h.t(1.5))]), ..job("echo") };
    let ahead = h.create(ahead, at).await;
    assert_eq!(h.fire(h.t(1.5)).await.runs_pending, 1);
    let late = [h.create(job("echo"), at).await, h.create(job("echo"), h.t(1.01)).await];
    assert_eq!(h.claim_one(&w.id, h.t(1.1)).await.job_id, late[0].id);
    assert_eq!(h.claim_one(&w.id, h.t(1.5)).await.job_id, ahead.id, "the run stored ahead, once due");
    assert_eq!(h.claim_one(&w.id, h.t(1.5)).await.job_id, late[1].id);
}

/// A claim returns only pending runs that are due (`scheduled_for <= now`) and whose handler
/// the worker serves; `run_next_pending` tells idle claimers when to look again.
pub async fn claim_only_returns_due_runs_of_the_workers_handlers(h: Harness) {
    let j1 = h.create(job("h1"), h.now).await;
    let j2 = h.create(job("h2"), h.now).await;
    let later = h.t(100.0);
    let j3 = h.create(JobRequest { triggers: Some(vec![once(later)]), ..job("h1") }, h.now).await;
    // Materialised ahead: the run exists, due at T+100.
    assert_eq!(h.fire(later).await.runs_pending, 1);
    let w1 = h.worker(&["h1"], h.now).await;
    let w2 = h.worker(&["h2"], h.now).await;
    let w0 = h.worker(&[], h.now).await;

    assert_eq!(h.store.run_next_pending(h.t(-1.0)).await.expect("run_next_pending"), Some(h.now));
    assert_eq!(h.store.run_next_pending(h.now).await.expect("run_next_pending"), Some(later), "only later ones");
    let got = h.claim(&w1.id, 10, h.t(50.0)).await;
    assert_eq!(claimed_jobs(&got), vec![j1.id.clone()], "only the due run of the worker's handler");
    assert!(h.claim(&w0.id, 10, h.t(50.0)).await.is_empty(), "a worker with no handlers gets nothing");
    let got = h.claim(&w2.id, 10, h.t(50.0)).await;
    assert_eq!(claimed_jobs(&got), vec![j2.id.clone()]);
    assert_eq!(got[0].handler, "h2");

    assert_eq!(h.store.run_next_pending(h.t(50.0)).await.expect("run_next_pending"), Some(later));
    assert!(h.claim(&w1.id, 10, h.t(99.0)).await.is_empty(), "not due yet");
    assert!(h.claim(&w2.id, 10, later).await.is_empty(), "not this worker's handler");
    let got = h.claim(&w1.id, 10, later).await;
    assert_eq!(claimed_jobs(&got), vec![j3.id.clone()]);
    assert_eq!(got[0].scheduled_for, later);
    assert_eq!(h.store.run_next_pending(h.t(-1.0)).await.expect("run_next_pending"), None);
}

/// Every claim makes `attempt` + 1, sets the lease and hands over the run's snapshot; it is the
/// worker's sign of life.
pub async fn claim_bumps_attempt_and_sets_lease(h: Harness) {
    let j = h
        .create(
            JobRequest {
                payload: Some(json!({"x": 1})),
                timeout: Some(Duration::from_secs(5)),
                retry: Some(retry(3, 1, 10)),
                ..job("echo")
            },
            h.now,
        )
        .await;
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.t(2.0)).await;
    assert_eq!(c.attempt, 1, "the first claim makes attempt 1");
    assert_eq!(c.lease_expires_at, h.t(32.0));
    assert_eq!((c.job_id.as_str(), c.handler.as_str()), (j.id.as_str(), "echo"));
    assert_eq!(c.payload, json!({"x": 1}));
    assert_eq!(c.timeout, Some(Duration::from_secs(5)));
    assert_eq!(c.scheduled_for, h.now);

    let r = h.run(&c.run_id).await;
    assert_eq!((r.state, r.attempt), (RunState::Running, 1));
    assert_eq!(r.worker_id.as_deref(), Some(w.id.as_str()));
    assert_eq!((r.started_at, r.lease_expires_at), (Some(h.t(2.0)), Some(h.t(32.0))));
    let wk = h.store.worker_get(&w.id).await.expect("worker_get");
    assert_eq!((wk.last_heartbeat, wk.running), (h.t(2.0), 1), "a claim is a sign of life");
    assert!(h.claim(&w.id, 10, h.t(3.0)).await.is_empty(), "a running run is not claimed again");

    let failed = h.complete(completion(&c, &w.id, RunState::Failed), h.t(3.0)).await.expect("complete");
    assert_eq!((failed.state, failed.attempt), (RunState::Pending, 1), "a retry waits; attempt counts claims");
    let c2 = h.claim_one(&w.id, h.t(10.0)).await;
    assert_eq!((c2.run_id.as_str(), c2.attempt), (c.run_id.as_str(), 2));
    assert_eq!(c2.lease_expires_at, h.t(40.0));
    assert_eq!(h.run(&c.run_id).await.started_at, Some(h.t(10.0)), "started_at is the latest attempt's");
}

/// Claims racing on two nodes hand out each run once.
pub async fn concurrent_claims_on_two_handles_hand_each_run_out_once(h: Harness) {
    let batch: Vec<JobCreate> = (0..60).map(|_| submission(job("echo"))).collect();
    let out = h.store.job_create_many(batch, h.now).await.expect("job_create_many");
    assert!(out.iter().all(|o| o.is_ok()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { h.store.clone() } else { h.other.clone() };
        let w = store.worker_register(&format!("w{i}"), &["echo".to_string()], 8, None, h.now).await.expect("register");
        let now = h.t(1.0);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let p = ClaimParams { worker_id: w.id.clone(), max: 3, lease: LEASE, now };
                let got = store.run_claim(&p).await.expect("run_claim");
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|c| (c.run_id, c.attempt)));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    assert_eq!(all.len(), 60, "every run claimed");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1), "no run claimed twice");
    let mut ids: Vec<&String> = all.iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "no run handed out twice");
}

/// Cancelling a pending run finishes it at once (`cancelled`, not claimable); cancelling a
/// finished run is `AlreadyFinished`; an unknown run is `NotFound`.
pub async fn cancel_pending_is_immediate_and_cancel_finished_is_already_finished(h: Harness) {
    let j = h.create(job("echo"), h.now).await;
    let run = h.runs(&j.id).await.remove(0);
    let cancelled = h.store.run_cancel(&run.id, h.t(1.0)).await.expect("run_cancel");
    assert_eq!(cancelled.state, RunState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(h.t(1.0)));
    assert!(cancelled.reason.is_some(), "a cancelled run says why");
    assert_eq!(h.other.run_get(&run.id).await.expect("run_get").state, RunState::Cancelled);

    let w = h.worker(&["echo"], h.now).await;
    assert!(h.claim(&w.id, 10, h.t(2.0)).await.is_empty());
    match h.store.run_cancel(&run.id, h.t(3.0)).await {
        Err(StoreError::AlreadyFinished(_)) => {}
        other => panic!("cancel of a finished run: expected AlreadyFinished, got {other:?}"),
    }

    let j2 = h.create(job("echo"), h.t(4.0)).await;
    let c = h.claim_one(&w.id, h.t(4.0)).await;
    assert_eq!(c.job_id, j2.id);
    h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(5.0)).await.expect("complete");
    match h.store.run_cancel(&c.run_id, h.t(6.0)).await {
        Err(StoreError::AlreadyFinished(_)) => {}
        other => panic!("cancel of a succeeded run: expected AlreadyFinished, got {other:?}"),
    }
    assert_eq!(h.run(&c.run_id).await.state, RunState::Succeeded);

    assert_not_found(h.store.run_cancel("no-such-run", h.now).await, "cancel of unknown run");
    assert_not_found(h.store.run_get("no-such-run").await, "get of unknown run");
}

/// Pruning deletes finished runs that finished before the cutoff, in batches of at most
/// `limit`, and never touches pending, running or newer runs.
pub async fn prune_deletes_only_finished_runs_older_than_cutoff(h: Harness) {
    let batch: Vec<JobCreate> =
        (0..6).map(|_| submission(JobRequest { retry: Some(retry(1, 1, 1)), ..job("echo") })).collect();
    h.store.job_create_many(batch, h.now).await.expect("job_create_many");
    let w = h.worker(&["echo"], h.now).await;
    let claims = h.claim(&w.id, 4, h.t(1.0)).await;
    assert_eq!(claims.len(), 4);
    let (succeeded_old, failed_old, running, succeeded_new) = (&claims[0], &claims[1], &claims[2], &claims[3]);
    h.complete(completion(succeeded_old, &w.id, RunState::Succeeded), h.t(10.0)).await.expect("complete");
    let f = h.complete(completion(failed_old, &w.id, RunState::Failed), h.t(20.0)).await.expect("complete");
    assert_eq!(f.state, RunState::Failed);
    h.complete(completion(succeeded_new, &w.id, RunState::Succeeded), h.t(40.0)).await.expect("complete");
    let pending: Vec<Run> = h
        .store
        .run_list(&RunFilter { state: Some(RunState::Pending), limit: 10, ..Default::default() })
        .await
        .expect("run_list")
        .items;
    assert_eq!(pending.len(), 2);
    let cancelled = h.store.run_cancel(&pending[0].id, h.t(5.0)).await.expect("run_cancel");
    let still_pending = &pending[1];

    let cutoff = h.t(30.0);
    assert_eq!(h.store.run_prune(cutoff, 2).await.expect("run_prune"), 2, "at most limit per call");
    assert_eq!(h.store.run_prune(cutoff, 100).await.expect("run_prune"), 1);
    assert_eq!(h.store.run_prune(cutoff, 100).await.expect("run_prune"), 0);
    for gone in [&succeeded_old.run_id, &failed_old.run_id, &cancelled.id] {
        assert_not_found(h.store.run_get(gone).await, "a pruned run");
    }
    assert_eq!(h.run(&running.run_id).await.state, RunState::Running);
    assert_eq!(h.run(&succeeded_new.run_id).await.state, RunState::Succeeded);
    assert_eq!(h.run(&still_pending.id).await.state, RunState::Pending);
    assert_eq!(h.all_jobs().await.len(), 6, "pruning runs leaves jobs alone");
}

/// Runs list newest `scheduled_for` first; `job_id`, `state`, `namespace`, `since` (inclusive)
/// and `until` (exclusive) filter; the cursor pages through everything once.
pub async fn run_list_filters_and_pagination(h: Harness) {
    let a = h.create(JobRequest { triggers: Some(vec![every(10)]), ..job("echo") }, h.now).await;
    h.fire(h.t(55.0)).await;
    let b = h.create(JobRequest { namespace: Some("other".into()), ..job("echo") }, h.now).await;

    let list = |f: RunFilter| {
        let store = h.store.clone();
        async move {
            let f = RunFilter { limit: if f.limit == 0 { 100 } else { f.limit }, ..f };
            store.run_list(&f).await.expect("run_list")
        }
    };
    let times = |p: &Page<Run>| p.items.iter().map(|r| r.scheduled_for).collect::<Vec<_>>();

    let of_a = list(RunFilter { job_id: Some(a.id.clone()), ..Default::default() }).await;
    assert_eq!(times(&of_a), [h.t(50.0), h.t(40.0), h.t(30.0), h.t(20.0), h.t(10.0)], "newest first");
    assert_eq!(of_a.next_cursor, None);
    let window = list(RunFilter { since: Some(h.t(20.0)), until: Some(h.t(40.0)), ..Default::default() }).await;
    assert_eq!(times(&window), [h.t(30.0), h.t(20.0)], "since inclusive, until exclusive");
    let first = list(RunFilter { since: Some(h.now), until: Some(h.t(10.0)), ..Default::default() }).await;
    assert_eq!(first.items.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(), [b.id.as_str()]);
    let other_ns = list(RunFilter { namespace: Some("other".into()), ..Default::default() }).await;
    assert_eq!(other_ns.items.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(), [b.id.as_str()]);

    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.t(60.0)).await;
    assert_eq!(c.job_id, b.id, "the oldest due run is claimed");
    let running = list(RunFilter { state: Some(RunState::Running), ..Default::default() }).await;
    assert_eq!(running.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [c.run_id.as_str()]);
    assert_eq!(list(RunFilter { state: Some(RunState::Pending), ..Default::default() }).await.items.len(), 5);
    let a_pending =
        list(RunFilter { job_id: Some(a.id.clone()), state: Some(RunState::Pending), ..Default::default() }).await;
    assert_eq!(a_pending.items.len(), 5);

    // Pages of 2 over job A: 50 40 | 30 20 | 10.
    let mut f = RunFilter { job_id: Some(a.id.clone()), limit: 2, ..Default::default() };
    let mut pages = Vec::new();
    loop {
        let page = h.store.run_list(&f).await.expect("run_list");
        pages.push(times(&page));
        match page.next_cursor {
            Some(cur) => f.cursor = Some(cur),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not terminate");
    }
    assert_eq!(pages, [vec![h.t(50.0), h.t(40.0)], vec![h.t(30.0), h.t(20.0)], vec![h.t(10.0)]]);

    // Filters hold across pages, and a cursor works on the other handle.
    let f = RunFilter { since: Some(h.t(20.0)), limit: 2, ..Default::default() };
    let p1 = h.store.run_list(&f).await.expect("run_list");
    assert_eq!(times(&p1), [h.t(50.0), h.t(40.0)]);
    let p2 = h.other.run_list(&RunFilter { cursor: p1.next_cursor, ..f }).await.expect("run_list");
    assert_eq!(times(&p2), [h.t(30.0), h.t(20.0)]);
    if let Some(cur) = p2.next_cursor {
        let rest = list(RunFilter { since: Some(h.t(20.0)), limit: 2, cursor: Some(cur), ..Default::default() }).await;
        assert!(rest.items.is_empty(), "nothing past the last page");
    }

    match h.store.run_list(&RunFilter { cursor: Some("garbage".into()), limit: 2, ..Default::default() }).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a malformed cursor is Invalid, got {other:?}"),
    }
}

/// `stats` counts runs by state, due pending work and the oldest due run's wait, jobs,
/// triggers with a fire left and workers by state; `ping` answers.
pub async fn stats_count_runs_jobs_triggers_and_workers(h: Harness) {
    h.store.ping().await.expect("ping");
    h.create(job("echo"), h.now).await;
    h.create(job("echo"), h.t(10.0)).await;
    h.create(JobRequest { triggers: Some(vec![every(60)]), ..job("echo") }, h.now).await;
    h.create(JobRequest { triggers: Some(vec![once(h.t(5.0))]), ..job("echo") }, h.now).await;
    assert_eq!(h.fire(h.t(5.0)).await.runs_pending, 1);
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.claim_one(&w.id, h.t(5.0)).await.scheduled_for, h.now);

    let s = h.other.stats(h.t(20.0)).await.expect("stats");
    let runs = |state: RunState| s.runs_by_state.iter().find(|(st, _)| *st == state).map_or(0, |(_, n)| *n);
    assert_eq!((runs(RunState::Pending), runs(RunState::Running), runs(RunState::Succeeded)), (2, 1, 0), "{s:?}");
    assert_eq!(s.runs_due, 2, "{s:?}");
    assert!((s.oldest_due_wait_s - 15.0).abs() < 1e-3, "the run due at T+5 has waited 15 s: {s:?}");
    assert_eq!((s.jobs, s.triggers_active), (4, 1), "the once trigger is spent: {s:?}");
    let workers = |state: WorkerState| s.workers_by_state.iter().find(|(st, _)| *st == state).map_or(0, |(_, n)| *n);
    assert_eq!((workers(WorkerState::Active), workers(WorkerState::Dead)), (1, 0), "{s:?}");
}

/// Four loops on two nodes, each firing due triggers then claiming and completing until nothing
/// is left, a second at a time for five seconds: no run is handed out twice, and every job has
/// exactly one run per second.
pub async fn many_schedulers_and_claimers_hand_out_each_fire_once(h: Harness) {
    let jobs: Vec<JobCreate> = (0..300)
        .map(|i| submission(JobRequest { name: Some(format!("j{i}")), triggers: Some(vec![every(1)]), ..job("echo") }))
        .collect();
    for r in h.store.job_create_many(jobs, h.now).await.expect("job_create_many") {
        r.expect("created");
    }
    let wa = h.worker(&["echo"], h.now).await;
    let wb = h.other.worker_register("b", &["echo".to_string()], 8, None, h.now).await.expect("register");
    let mut tasks = Vec::new();
    let loops = [(h.store.clone(), wa.id.clone()), (h.other.clone(), wb.id.clone())];
    for (i, (store, w)) in loops.iter().cloned().chain(loops.iter().cloned()).enumerate() {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            for step in 1..=5 {
                let now = h.t(step as f64);
                store.trigger_fire_due(now, 120 + i as u32, MISFIRE_THRESHOLD).await.expect("trigger_fire_due");
                loop {
                    let p = ClaimParams { worker_id: w.clone(), max: 50, lease: LEASE, now };
                    let got = store.run_claim(&p).await.expect("run_claim");
                    if got.is_empty() {
                        break;
                    }
                    let done = got.iter().map(|c| completion(c, &w, RunState::Succeeded)).collect();
                    for r in store.run_complete_many(done, now).await.expect("run_complete_many") {
                        r.expect("completed");
                    }
                    claimed.extend(got.into_iter().map(|c| c.run_id));
                }
            }
            claimed
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    // Drain what the racing passes left due.
    while h.fire(h.t(5.0)).await.triggers > 0 {}
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "no run handed out twice");
    let stats = h.store.stats(h.t(5.0)).await.expect("stats");
    let total: u64 = stats.runs_by_state.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 300 * 5, "one run per job per second: {stats:?}");
}

/// An operator's retry: a failed, timed-out or cancelled run goes back to `pending` due now,
/// with `max_attempts` = its attempt + the job's `retry.max_attempts` and `retried by operator`
/// after its reason; every other state is refused and left alone.
pub async fn retry_puts_a_finished_run_back_due_now_with_a_full_set_of_attempts(h: Harness) {
    let j = h.create(JobRequest { retry: Some(retry(2, 1, 10)), ..job("echo") }, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let c1 = h.claim_one(&w.id, h.now).await;
    let failed = Completion { error: Some("boom".into()), ..completion(&c1, &w.id, RunState::Failed) };
    h.complete(failed, h.t(1.0)).await.expect("complete");
    match h.store.run_retry(&c1.run_id, h.t(1.5)).await {
        Err(StoreError::NotRetryable(m)) => assert!(m.contains("pending"), "{m}"),
        other => panic!("retry of a pending run: expected NotRetryable, got {other:?}"),
    }
    let c2 = h.claim_one(&w.id, h.t(20.0)).await;
    match h.store.run_retry(&c2.run_id, h.t(20.5)).await {
        Err(StoreError::NotRetryable(m)) => assert!(m.contains("running"), "{m}"),
        other => panic!("retry of a running run: expected NotRetryable, got {other:?}"),
    }
    let failed = Completion { error: Some("boom again".into()), ..completion(&c2, &w.id, RunState::Failed) };
    let done = h.complete(failed, h.t(21.0)).await.expect("complete");
    assert_eq!((done.state, done.attempt, done.max_attempts), (RunState::Failed, 2, 2));
    let old_reason = done.reason.clone().expect("a failed run says why");

    let r = h.store.run_retry(&c1.run_id, h.t(30.0)).await.expect("run_retry");
    assert_eq!((r.state, r.scheduled_for, r.attempt, r.max_attempts), (RunState::Pending, h.t(30.0), 2, 4));
    assert_eq!(r.reason, Some(format!("{old_reason}; retried by operator")));
    assert_eq!((r.finished_at, r.cancel_requested), (None, false));
    assert_eq!(h.other.run_get(&r.id).await.expect("run_get").state, RunState::Pending, "durable");
    assert!(h.claim(&w.id, 1, h.t(29.0)).await.is_empty(), "due now, not before");
    let c3 = h.claim_one(&w.id, h.t(30.0)).await;
    assert_eq!((c3.run_id.as_str(), c3.attempt), (c1.run_id.as_str(), 3), "attempt keeps counting");
    h.complete(completion(&c3, &w.id, RunState::Succeeded), h.t(31.0)).await.expect("complete");
    match h.store.run_retry(&c1.run_id, h.t(32.0)).await {
        Err(StoreError::NotRetryable(m)) => assert!(m.contains("succeeded"), "{m}"),
        other => panic!("retry of a succeeded run: expected NotRetryable, got {other:?}"),
    }
    assert_eq!(h.run(&c1.run_id).await.state, RunState::Succeeded, "a refused retry changes nothing");

    // A cancelled run never claimed: a full set of attempts from 0; the reason gets the note.
    let j2 = h.create(JobRequest { retry: Some(retry(3, 1, 10)), ..job("echo") }, h.t(40.0)).await;
    let run = h.runs(&j2.id).await.remove(0);
    h.store.run_cancel(&run.id, h.t(41.0)).await.expect("run_cancel");
    let r = h.store.run_retry(&run.id, h.t(42.0)).await.expect("run_retry");
    assert_eq!((r.state, r.attempt, r.max_attempts), (RunState::Pending, 0, 3));
    assert!(r.reason.as_deref().is_some_and(|x| x.ends_with("; retried by operator")), "{r:?}");
    assert_not_found(h.store.run_retry("no-such-run", h.now).await, "retry of unknown run");
    let _ = j;
}

/// Runs list by handler too (the bulk actions' filter).
pub async fn run_list_filters_by_handler(h: Harness) {
    let a = h.create(job("echo"), h.now).await;
    h.create(job("other"), h.now).await;
    let f = RunFilter { handler: Some("echo".into()), limit: 100, ..Default::default() };
    let page = h.store.run_list(&f).await.expect("run_list");
    assert_eq!(page.items.iter().map(|r| r.job_id.as_str()).collect::<Vec<_>>(), [a.id.as_str()]);
}

/// A batch cancel or retry acts on each run as the single call does, in one transaction: a
/// pending run is cancelled at once, a running one is asked to stop, a finished or unknown one
/// is refused alone (the others still act); a retry takes only finished-unsuccessful runs.
pub async fn cancel_many_and_retry_many_act_on_each_run_as_one_call_would(h: Harness) {
    let w = h.worker(&["echo"], h.now).await;
    let once_only = || Some(retry(1, 1, 1));
    let running_job = h.create(JobRequest { retry: once_only(), ..job("echo") }, h.now).await;
    let running = h.claim_one(&w.id, h.t(1.0)).await;
    assert_eq!(running.job_id, running_job.id);
    let pending = h.create(job("idle"), h.t(2.0)).await;
    let pending = h.runs(&pending.id).await.remove(0);
    let failed_job = h.create(JobRequest { retry: once_only(), ..job("echo") }, h.t(3.0)).await;
    let failed = h.claim_one(&w.id, h.t(4.0)).await;
    assert_eq!(failed.job_id, failed_job.id);
    h.complete(completion(&failed, &w.id, RunState::Failed), h.t(5.0)).await.expect("complete");

    let ids = vec![pending.id.clone(), running.run_id.clone(), failed.run_id.clone(), "no-such-run".to_string()];
    let out = h.store.run_cancel_many(&ids, h.t(6.0)).await.expect("run_cancel_many");
    assert_eq!(out.len(), 4);
    let cancelled = out[0].as_ref().expect("the pending run is cancelled");
    assert_eq!((cancelled.state, cancelled.finished_at), (RunState::Cancelled, Some(h.t(6.0))));
    let asked = out[1].as_ref().expect("the running run is asked to stop");
    assert_eq!((asked.state, asked.cancel_requested), (RunState::Running, true));
    assert!(matches!(out[2], Err(StoreError::AlreadyFinished(_))), "{:?}", out[2]);
    assert!(matches!(out[3], Err(StoreError::NotFound(_))), "an unknown run: {:?}", out[3]);
    assert_eq!(h.other.run_get(&pending.id).await.expect("run_get").state, RunState::Cancelled, "committed");

    let out = h.store.run_retry_many(&ids, h.t(7.0)).await.expect("run_retry_many");
    let retried = out[0].as_ref().expect("the cancelled run is retried");
    assert_eq!((retried.state, retried.scheduled_for), (RunState::Pending, h.t(7.0)));
    assert!(matches!(out[1], Err(StoreError::NotRetryable(_))), "a running run: {:?}", out[1]);
    let retried = out[2].as_ref().expect("the failed run is retried");
    assert_eq!((retried.state, retried.attempt, retried.max_attempts), (RunState::Pending, 1, 2));
    assert!(matches!(out[3], Err(StoreError::NotFound(_))), "an unknown run: {:?}", out[3]);
    assert!(h.store.run_retry_many(&[], h.t(8.0)).await.expect("an empty batch").is_empty());
}
