//! Jobs: durable submission, idempotent replays and conflicts, listing, update, delete, pause.

use super::*;
use crate::domain::{Overlap, TriggerKind};
use serde_json::json;
use std::collections::HashMap;

/// Guarantee 1: once `job_create_many` returns `Ok`, the job (and its due-now run) is committed:
/// another handle reads exactly what the creating call returned.
pub async fn create_returns_after_commit_and_is_visible_to_another_handle(h: Harness) {
    let r = JobRequest {
        name: Some("nightly-report".into()),
        payload: Some(
            json!({"to": "a@b.c", "ü": "✓ \"quoted\"", "list": [1, 2.5, null, true], "big": 9007199254740993u64}),
        ),
        priority: Some(3),
        timeout: Some(Duration::from_secs(30)),
        triggers: Some(vec![every(15)]),
        ..job("send-email")
    };
    let created = h.submit(r, h.now).await.expect("created");
    assert!(created.created);
    let j = created.job;
    assert_eq!(
        (j.name.as_str(), j.namespace.as_str(), j.handler.as_str()),
        ("nightly-report", "default", "send-email")
    );
    assert_eq!(j.next_fire_time, Some(h.t(15.0)), "interval first fires at creation + every");

    let got = h.other.job_get(&j.id, h.now).await.expect("the other handle sees the committed job");
    assert_eq!(got.name, j.name);
    assert_eq!(got.namespace, j.namespace);
    assert_eq!(got.handler, j.handler);
    assert_eq!(got.payload, j.payload, "the payload round-trips exactly");
    assert_eq!(got.priority, 3);
    assert_eq!(got.timeout, Some(Duration::from_secs(30)));
    assert_eq!(got.retry, RetryPolicy::default());
    assert_eq!(got.overlap, Overlap::Allow);
    assert!(!got.paused);
    assert_eq!(got.created_at, h.now);
    assert_eq!(got.triggers, j.triggers, "the returned triggers are the stored ones");
    assert_eq!(got.triggers.len(), 1);
    assert_eq!(got.triggers[0].next_fire_at, Some(h.t(15.0)));
    assert_eq!(got.triggers[0].fires, 0);
    assert_eq!(got.next_fire_time, j.next_fire_time);
    assert!(!got.running);

    let listed = h.other.job_list(&JobFilter { limit: 10, ..Default::default() }, h.now).await.expect("job_list");
    assert_eq!(listed.items.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [j.id.as_str()]);

    // A job with no trigger commits its due-now run in the same transaction.
    let now_job = h.create(job("echo"), h.t(1.0)).await;
    let f = RunFilter { job_id: Some(now_job.id.clone()), limit: 10, ..Default::default() };
    let runs = h.other.run_list(&f).await.expect("run_list").items;
    assert_eq!(runs.len(), 1, "the due-now run is visible to the other handle: {runs:?}");
}

/// A submission whose `idempotency_key` was already accepted returns the first job with
/// `created: false` (HTTP 200), from either handle, and stores nothing new.
pub async fn idempotency_key_replay_returns_existing_job_created_false(h: Harness) {
    let r = JobRequest { idempotency_key: Some("order-42".into()), payload: Some(json!({"n": 1})), ..job("echo") };
    let first = h.submit(r.clone(), h.now).await.expect("first");
    assert!(first.created);
    assert_eq!(first.job.idempotency_key.as_deref(), Some("order-42"));

    let again = h.submit(r.clone(), h.t(5.0)).await.expect("replay");
    assert!(!again.created, "a replay is not a creation");
    assert_eq!(again.job.id, first.job.id);
    assert_eq!(again.job.created_at, h.now, "the replay returns the original job");
    assert_eq!(again.job.payload, json!({"n": 1}));

    let mut via_other = h.other.job_create_many(vec![submission(r)], h.t(6.0)).await.expect("job_create_many");
    let via_other = via_other.remove(0).expect("replay through the other handle");
    assert!(!via_other.created);
    assert_eq!(via_other.job.id, first.job.id);

    assert_eq!(h.all_jobs().await.len(), 1, "replays store no job");
    assert_eq!(h.runs(&first.job.id).await.len(), 1, "replays of a due-now job create no second run");
}

/// Reusing an `idempotency_key` with a different definition is an `idempotency_conflict`, and
/// the original job is untouched.
pub async fn idempotency_key_with_different_definition_conflicts(h: Harness) {
    let first = h
        .create(JobRequest { idempotency_key: Some("k".into()), payload: Some(json!({"n": 1})), ..job("echo") }, h.now)
        .await;
    let r = JobRequest { idempotency_key: Some("k".into()), payload: Some(json!({"n": 2})), ..job("echo") };
    assert_conflict(h.submit(r, h.t(1.0)).await, "idempotency_conflict");
    let jobs = h.all_jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, first.id);
    assert_eq!(jobs[0].payload, json!({"n": 1}));
}

/// The same `namespace` + `name` with an identical definition is a replay (`created: false`).
pub async fn same_name_same_definition_is_a_replay(h: Harness) {
    let r = JobRequest { name: Some("report".into()), triggers: Some(vec![cron("0 9 * * *")]), ..job("echo") };
    let first = h.create(r.clone(), h.now).await;
    let again = h.submit(r, h.t(1.0)).await.expect("replay");
    assert!(!again.created);
    assert_eq!(again.job.id, first.id);
    assert_eq!(again.job.triggers, first.triggers, "the replay does not replace the triggers");
    assert_eq!(h.all_jobs().await.len(), 1);
}

/// A name taken in its namespace by a different definition is a `name_conflict`; the same name
/// in another namespace is free.
pub async fn same_name_different_definition_conflicts(h: Harness) {
    let first = h.create(JobRequest { name: Some("report".into()), ..job("echo") }, h.now).await;
    let different = JobRequest { name: Some("report".into()), payload: Some(json!({"x": 1})), ..job("echo") };
    assert_conflict(h.submit(different.clone(), h.t(1.0)).await, "name_conflict");
    assert_eq!(h.job(&first.id, h.now).await.payload, json!({}), "the holder of the name is untouched");

    let elsewhere = h.create(JobRequest { namespace: Some("other".into()), ..different }, h.t(2.0)).await;
    assert_eq!(elsewhere.namespace, "other");
    assert_eq!(h.all_jobs().await.len(), 2);
}

/// Each item of a batch succeeds or fails alone: one conflicting item does not reject the
/// others, and the others are committed.
pub async fn batch_items_stand_alone(h: Harness) {
    h.create(JobRequest { name: Some("taken".into()), ..job("echo") }, h.now).await;
    let items = vec![
        submission(JobRequest { name: Some("a".into()), ..job("echo") }),
        submission(JobRequest { name: Some("taken".into()), payload: Some(json!({"other": true})), ..job("echo") }),
        submission(JobRequest { name: Some("b".into()), ..job("echo") }),
        // Items see the ones before them in the same batch.
        submission(JobRequest { name: Some("a".into()), payload: Some(json!({"other": true})), ..job("echo") }),
        submission(JobRequest { name: Some("a".into()), ..job("echo") }),
    ];
    let out = h.store.job_create_many(items, h.t(1.0)).await.expect("job_create_many");
    assert_eq!(out.len(), 5, "one outcome per item, in order");
    let a = out[0].as_ref().expect("item 0 stored");
    assert!(a.created);
    assert_eq!(a.job.name, "a");
    match &out[1] {
        Err(StoreError::Conflict { code: "name_conflict", .. }) => {}
        other => panic!("item 1: expected name_conflict, got {other:?}"),
    }
    let b = out[2].as_ref().expect("item 2 stored");
    assert!(b.created);
    assert_eq!(b.job.name, "b");
    match &out[3] {
        Err(StoreError::Conflict { code: "name_conflict", .. }) => {}
        other => panic!("item 3 (name of item 0, other definition): expected name_conflict, got {other:?}"),
    }
    let replay = out[4].as_ref().expect("item 4 is a replay of item 0");
    assert!(!replay.created);
    assert_eq!(replay.job.id, a.job.id);
    for id in [&a.job.id, &b.job.id] {
        h.other.job_get(id, h.now).await.expect("stored items are committed");
    }
    assert_eq!(h.all_jobs().await.len(), 3);
}

/// A job with no trigger gets exactly one run, due at its creation, with no trigger id.
pub async fn job_without_triggers_gets_one_run_due_now(h: Harness) {
    let j = h.create(JobRequest { payload: Some(json!({"n": 7})), ..job("echo") }, h.now).await;
    assert!(j.triggers.is_empty());
    assert_eq!(j.next_fire_time, None);
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let r = &runs[0];
    assert_eq!((r.state, r.attempt, r.scheduled_for), (RunState::Pending, 0, h.now));
    assert_eq!(r.trigger_id, None);
    assert_eq!(r.job_id, j.id);
    assert_eq!(r.handler, "echo");

    assert_eq!(h.fire(h.t(3600.0)).await, FireReport::default(), "nothing to fire");
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.now).await;
    assert_eq!((c.run_id.as_str(), c.scheduled_for), (r.id.as_str(), h.now));
    assert_eq!(c.payload, json!({"n": 7}));
    assert_eq!(h.runs(&j.id).await.len(), 1);
}

/// Plain submissions (no name, key or trigger) need no lookup: a batch of only those, and one
/// mixing them with named and triggered ones, store each job with exactly its own run (none for
/// a triggered job, a held one for a paused job), committed when the call returns; a named
/// item still replays an earlier item of its batch. Claims then go by priority, then order.
pub async fn plain_and_named_submissions_in_one_batch_each_store_their_own_run(h: Harness) {
    let plain = |i: i64| submission(JobRequest { payload: Some(json!({"i": i})), ..job("echo") });
    let out = h.store.job_create_many((0..3).map(plain).collect(), h.now).await.expect("plain batch");
    let plain_ids: Vec<String> = out.into_iter().map(|r| r.expect("created").job.id).collect();
    let items = vec![
        plain(3),
        submission(JobRequest { name: Some("n".into()), ..job("echo") }),
        submission(JobRequest { paused: Some(true), ..job("echo") }),
        submission(JobRequest { triggers: Some(vec![every(60)]), ..job("echo") }),
        submission(JobRequest { name: Some("n".into()), ..job("echo") }),
        submission(JobRequest { priority: Some(5), limits: Some(vec!["k".into()]), ..job("echo") }),
    ];
    let out = h.store.job_create_many(items, h.t(1.0)).await.expect("mixed batch");
    let jobs: Vec<JobCreated> = out.into_iter().map(|r| r.expect("stored")).collect();
    assert_eq!(jobs.iter().map(|c| c.created).collect::<Vec<_>>(), [true, true, true, true, false, true]);
    assert_eq!(jobs[4].job.id, jobs[1].job.id, "the second \"n\" replays the first");
    for id in &plain_ids {
        let f = RunFilter { job_id: Some(id.clone()), limit: 10, ..Default::default() };
        let runs = h.other.run_list(&f).await.expect("run_list").items;
        assert_eq!(runs.len(), 1, "{runs:?}");
        assert_eq!((runs[0].state, runs[0].scheduled_for), (RunState::Pending, h.now));
    }
    let run_counts: Vec<usize> =
        futures::future::join_all(jobs.iter().map(|c| h.runs(&c.job.id))).await.iter().map(Vec::len).collect();
    assert_eq!(run_counts, [1, 1, 1, 0, 1, 1], "one run per job without trigger");
    assert_eq!(h.all_jobs().await.len(), 3 + 5);
    let w = h.worker(&["echo"], h.now).await;
    let mut claimed = Vec::new();
    for _ in 0..7 {
        claimed.extend(h.claim(&w.id, 1, h.t(2.0)).await.into_iter().map(|c| c.job_id));
    }
    assert_eq!(claimed.len(), 6, "the paused job's run is held: {claimed:?}");
    assert_eq!(claimed[0], jobs[5].job.id, "priority first");
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(sorted(&claimed[1..4]), sorted(&plain_ids), "then the oldest");
    assert_eq!(sorted(&claimed[4..]), sorted(&[jobs[0].job.id.clone(), jobs[1].job.id.clone()]));
}

/// A job created paused with no trigger has its due-now run, but it is held (not claimable)
/// until the job is resumed.
pub async fn job_created_paused_without_triggers_holds_its_run_until_resume(h: Harness) {
    let j = h.create(JobRequest { paused: Some(true), ..job("echo") }, h.now).await;
    assert!(j.paused);
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].state, runs[0].scheduled_for), (RunState::Pending, h.now));

    let w = h.worker(&["echo"], h.now).await;
    assert!(h.claim(&w.id, 10, h.t(60.0)).await.is_empty(), "a paused job's run is not claimed");

    let resumed = h.store.job_set_paused(&j.id, false, h.t(61.0)).await.expect("resume");
    assert!(!resumed.paused);
    let c = h.claim_one(&w.id, h.t(61.0)).await;
    assert_eq!(c.run_id, runs[0].id);
    assert_eq!(h.runs(&j.id).await.len(), 1, "resume does not add a run");
}

/// Jobs list newest `created_at` first; following `next_cursor` visits every job exactly once,
/// ties included, and the last page has no cursor.
pub async fn list_is_newest_first_with_cursor_pagination_covering_all(h: Harness) {
    let mut created = Vec::new();
    for i in 0..7 {
        // Pairs share a creation instant, so the cursor must break ties.
        let j = h.create(JobRequest { name: Some(format!("job-{i}")), ..job("echo") }, h.t((i / 2) as f64)).await;
        created.push(j.id);
    }
    let mut f = JobFilter { limit: 3, ..Default::default() };
    let mut pages = Vec::new();
    loop {
        let page = h.store.job_list(&f, h.now).await.expect("job_list");
        pages.push(page.items);
        match page.next_cursor {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
        assert!(pages.len() < 10, "pagination does not terminate");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let all: Vec<&Job> = pages.iter().flatten().collect();
    assert_eq!(all[0].id, created[6], "the newest job comes first");
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at), "newest first");
    assert_eq!(
        sorted_ids(all.iter().map(|j| j.id.as_str())),
        sorted_ids(created.iter().map(String::as_str)),
        "every job exactly once"
    );

    // A cursor is valid on any node.
    let first = h.store.job_list(&JobFilter { limit: 3, ..Default::default() }, h.now).await.expect("job_list");
    let f = JobFilter { limit: 3, cursor: first.next_cursor, ..Default::default() };
    let second = h.other.job_list(&f, h.now).await.expect("job_list on the other handle");
    assert_eq!(
        second.items.iter().map(|j| &j.id).collect::<Vec<_>>(),
        pages[1].iter().map(|j| &j.id).collect::<Vec<_>>()
    );

    let bad = JobFilter { limit: 3, cursor: Some("not a cursor".into()), ..Default::default() };
    match h.store.job_list(&bad, h.now).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("a malformed cursor is Invalid, got {other:?}"),
    }
}

/// `namespace`, `handler` and `paused` filter jobs, alone and together; no namespace covers all.
pub async fn list_filters_namespace_handler_paused(h: Harness) {
    for (i, (ns, handler, paused)) in
        [("a", "h1", false), ("a", "h2", true), ("b", "h1", true), ("b", "h2", false)].into_iter().enumerate()
    {
        let r = JobRequest {
            name: Some(format!("{ns}-{handler}")),
            namespace: Some(ns.into()),
            paused: Some(paused),
            triggers: Some(vec![every(60)]),
            ..job(handler)
        };
        h.create(r, h.t(i as f64)).await;
    }
    let names = |f: JobFilter| {
        let store = h.store.clone();
        let now = h.now;
        async move {
            let f = JobFilter { limit: 100, ..f };
            let mut names: Vec<String> =
                store.job_list(&f, now).await.expect("job_list").items.into_iter().map(|j| j.name).collect();
            names.sort();
            names
        }
    };
    assert_eq!(names(JobFilter::default()).await, ["a-h1", "a-h2", "b-h1", "b-h2"]);
    assert_eq!(names(JobFilter { namespace: Some("a".into()), ..Default::default() }).await, ["a-h1", "a-h2"]);
    assert_eq!(names(JobFilter { handler: Some("h1".into()), ..Default::default() }).await, ["a-h1", "b-h1"]);
    assert_eq!(names(JobFilter { paused: Some(true), ..Default::default() }).await, ["a-h2", "b-h1"]);
    assert_eq!(names(JobFilter { paused: Some(false), ..Default::default() }).await, ["a-h1", "b-h2"]);
    assert_eq!(
        names(JobFilter {
            namespace: Some("b".into()),
            handler: Some("h1".into()),
            paused: Some(true),
            ..Default::default()
        })
        .await,
        ["b-h1"]
    );
    assert!(names(JobFilter { namespace: Some("zzz".into()), ..Default::default() }).await.is_empty());
}

/// `running`, `last_start_time`, `last_end_time` and `last_worker` follow the job's runs.
pub async fn get_derives_running_and_last_times_from_runs(h: Harness) {
    let j = h.create(job("echo"), h.now).await;
    let fresh = h.job(&j.id, h.now).await;
    assert!(!fresh.running);
    assert_eq!((fresh.last_start_time, fresh.last_end_time, fresh.last_worker), (None, None, None));

    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.t(1.0)).await;
    let running = h.job(&j.id, h.t(1.0)).await;
    assert!(running.running);
    assert_eq!(running.last_start_time, Some(h.t(1.0)));
    assert_eq!(running.last_worker.as_deref(), Some(w.id.as_str()));

    h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(3.0)).await.expect("complete");
    let done = h.job(&j.id, h.t(3.0)).await;
    assert!(!done.running);
    assert_eq!(done.last_start_time, Some(h.t(1.0)));
    assert_eq!(done.last_end_time, Some(h.t(3.0)));
    assert_eq!(done.last_worker.as_deref(), Some(w.id.as_str()));
}

/// `job_update` replaces the definition and the triggers as a whole: the old triggers are gone
/// (they fire no more), the new ones start from the update.
pub async fn update_replaces_triggers(h: Harness) {
    let j = h
        .create(
            JobRequest {
                name: Some("u".into()),
                payload: Some(json!({"v": 1})),
                triggers: Some(vec![every(10), cron("0 0 * * *")]),
                ..job("echo")
            },
            h.now,
        )
        .await;
    let old: Vec<String> = j.triggers.iter().map(|t| t.id.clone()).collect();
    assert_eq!(old.len(), 2);

    let at = h.t(3600.0);
    let new_spec = spec(JobRequest {
        name: Some("u".into()),
        payload: Some(json!({"v": 2})),
        triggers: Some(vec![once(at)]),
        ..job("echo")
    });
    let updated = h.store.job_update(&j.id, new_spec, h.t(5.0)).await.expect("job_update");
    assert_eq!(updated.id, j.id);
    assert_eq!(updated.payload, json!({"v": 2}));
    assert_eq!(updated.created_at, h.now);
    assert_eq!(updated.updated_at, h.t(5.0));
    assert_eq!(updated.triggers.len(), 1, "triggers are replaced, not appended: {:?}", updated.triggers);
    let t = &updated.triggers[0];
    assert_eq!(t.spec.kind, TriggerKind::Once { at });
    assert!(!old.contains(&t.id), "the new trigger is a new trigger");
    assert_eq!((t.next_fire_at, t.fires), (Some(at), 0));
    assert_eq!(updated.next_fire_time, Some(at));

    let got = h.other.job_get(&j.id, h.t(5.0)).await.expect("job_get");
    assert_eq!(got.triggers, updated.triggers);

    // Only the new trigger fires: the old interval would have made runs all along.
    let report = h.fire(h.t(3601.0)).await;
    assert_eq!((report.triggers, report.runs_pending), (1, 1), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger_id.as_deref(), Some(t.id.as_str()));
    assert_eq!(runs[0].scheduled_for, at);
    assert_eq!(runs[0].payload, json!({"v": 2}), "the run snapshots the updated definition");

    assert_not_found(h.store.job_update("no-such-job", spec(job("echo")), h.now).await, "update of unknown job");
    h.create(JobRequest { name: Some("other".into()), ..job("echo") }, h.t(6.0)).await;
    let rename = spec(JobRequest { name: Some("other".into()), ..job("echo") });
    assert_conflict(h.store.job_update(&j.id, rename, h.t(7.0)).await, "name_conflict");
    assert_eq!(h.job(&j.id, h.t(7.0)).await.name, "u", "a refused update changes nothing");
}

/// An update that takes another job's idempotency key (or name) is refused with the same code
/// and message on every store, and changes nothing.
pub async fn update_taking_another_jobs_key_or_name_conflicts_alike(h: Harness) {
    let keyed = JobRequest { name: Some("keyed".into()), idempotency_key: Some("k-1".into()), ..job("echo") };
    h.create(keyed, h.now).await;
    let j = h.create(JobRequest { name: Some("mine".into()), ..job("echo") }, h.now).await;
    let take_key = spec(JobRequest { name: Some("mine".into()), idempotency_key: Some("k-1".into()), ..job("echo") });
    match h.store.job_update(&j.id, take_key, h.t(1.0)).await {
        Err(StoreError::Conflict { code, message }) => {
            assert_eq!(code, "idempotency_conflict");
            assert_eq!(message, "idempotency_key: \"k-1\" is used by another job");
        }
        other => panic!("expected an idempotency conflict, got {other:?}"),
    }
    let take_name = spec(JobRequest { name: Some("keyed".into()), ..job("echo") });
    match h.store.job_update(&j.id, take_name, h.t(1.0)).await {
        Err(StoreError::Conflict { code, message }) => {
            assert_eq!(code, "name_conflict");
            assert_eq!(message, "name: \"keyed\" is taken in namespace \"default\"");
        }
        other => panic!("expected a name conflict, got {other:?}"),
    }
    let after = h.job(&j.id, h.t(2.0)).await;
    assert_eq!((after.name.as_str(), after.idempotency_key.as_deref(), after.updated_at), ("mine", None, h.now));
}

/// Deleting a job removes it and its triggers; its pending runs become `cancelled` with reason
/// `job deleted`, running ones finish, and all its runs stay queryable.
pub async fn delete_cancels_pending_runs_with_reason_job_deleted_and_keeps_runs_queryable(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![every(1)]), ..job("echo") }, h.now).await;
    h.fire(h.t(2.5)).await;
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.t(2.5)).await;
    assert_eq!(c.scheduled_for, h.t(1.0), "the older run is claimed first");

    h.store.job_delete(&j.id, h.t(3.0)).await.expect("job_delete");
    assert_not_found(h.other.job_get(&j.id, h.t(3.0)).await, "job_get after delete");
    assert!(h.all_jobs().await.is_empty());

    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 2, "runs stay queryable: {runs:?}");
    assert_eq!(runs[0].state, RunState::Running, "a running run is left to finish");
    assert_eq!(runs[1].state, RunState::Cancelled);
    assert_eq!(runs[1].reason.as_deref(), Some("job deleted"));
    assert_eq!(runs[1].finished_at, Some(h.t(3.0)));

    assert_eq!(h.fire(h.t(10.0)).await, FireReport::default(), "a deleted job's triggers are gone");
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), None);

    let done = h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(4.0)).await.expect("complete");
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(h.run(&c.run_id).await.state, RunState::Succeeded);
    assert_eq!(h.runs(&j.id).await.len(), 2);

    assert_not_found(h.store.job_delete(&j.id, h.t(5.0)).await, "second delete");
}

/// A paused job's triggers do not fire and its pending runs are not claimed; a manual run of
/// it runs at once; on resume the held run is claimable and the trigger fires again.
pub async fn pause_stops_triggers_and_claims_manual_run_still_runs(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![every(10)]), ..job("echo") }, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.fire(h.t(10.0)).await.runs_pending, 1);
    let held = h.runs(&j.id).await.remove(0);

    let paused = h.store.job_set_paused(&j.id, true, h.t(11.0)).await.expect("pause");
    assert!(paused.paused);
    assert!(h.claim(&w.id, 10, h.t(12.0)).await.is_empty(), "a paused job's pending run is not claimed");
    assert_eq!(h.fire(h.t(35.0)).await, FireReport::default(), "a paused job's trigger does not fire");
    assert_eq!(h.runs(&j.id).await.len(), 1);
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), None, "paused triggers are not due");
    assert_eq!(
        h.store.run_next_pending(h.t(-1.0)).await.expect("run_next_pending"),
        None,
        "held runs are not pending work"
    );

    let manual = h.store.job_run_now(&j.id, h.t(36.0)).await.expect("job_run_now");
    assert_eq!(
        (manual.state, manual.scheduled_for, manual.trigger_id.as_deref()),
        (RunState::Pending, h.t(36.0), None)
    );
    let claimed = h.claim(&w.id, 10, h.t(36.0)).await;
    assert_eq!(claimed.iter().map(|c| c.run_id.as_str()).collect::<Vec<_>>(), [manual.id.as_str()]);

    let resumed = h.store.job_set_paused(&j.id, false, h.t(40.0)).await.expect("resume");
    assert!(!resumed.paused);
    let claimed = h.claim(&w.id, 10, h.t(40.0)).await;
    assert_eq!(claimed.iter().map(|c| c.run_id.as_str()).collect::<Vec<_>>(), [held.id.as_str()]);
    // 20, 30 and 40 were missed while paused but are within the misfire threshold: they fire late.
    let report = h.fire(h.t(40.0)).await;
    assert_eq!((report.triggers, report.runs_pending, report.runs_skipped), (1, 3, 0), "{report:?}");

    assert_not_found(h.store.job_set_paused("no-such-job", true, h.now).await, "pause of unknown job");
    assert_not_found(h.store.job_run_now("no-such-job", h.now).await, "run of unknown job");
}

/// A paused job's pending runs are not claimed, including the retry of a run that was running
/// when the job was paused and then failed.
pub async fn pause_holds_the_retry_of_a_run_that_fails_while_paused(h: Harness) {
    let j = h.create(JobRequest { retry: Some(retry(3, 1, 10)), ..job("echo") }, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let c = h.claim_one(&w.id, h.now).await;
    h.store.job_set_paused(&j.id, true, h.t(1.0)).await.expect("pause");
    let failed = h.complete(completion(&c, &w.id, RunState::Failed), h.t(2.0)).await.expect("complete");
    assert_eq!(failed.state, RunState::Pending, "attempts left: retried");
    assert!(h.claim(&w.id, 10, h.t(60.0)).await.is_empty(), "the retry of a paused job's run is not claimed");

    h.store.job_set_paused(&j.id, false, h.t(61.0)).await.expect("resume");
    let again = h.claim_one(&w.id, h.t(61.0)).await;
    assert_eq!((again.run_id.as_str(), again.attempt), (c.run_id.as_str(), 2));
}

/// While paused, a job's `next_fire_time` shows the trigger's next future fire time (not the
/// stale stored one).
pub async fn next_fire_time_of_paused_job_shows_next_future_time(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![every(60)]), ..job("echo") }, h.now).await;
    assert_eq!(j.next_fire_time, Some(h.t(60.0)));
    let paused = h.store.job_set_paused(&j.id, true, h.t(10.0)).await.expect("pause");
    assert_eq!(paused.next_fire_time, Some(h.t(60.0)));

    // Ten minutes later the stored time (T+60) is long past; the next one on the grid is T+660.
    let later = h.t(605.0);
    assert_eq!(h.job(&j.id, later).await.next_fire_time, Some(h.t(660.0)));
    let listed = h.store.job_list(&JobFilter { limit: 10, ..Default::default() }, later).await.expect("job_list");
    assert_eq!(listed.items[0].next_fire_time, Some(h.t(660.0)));
}

/// Two nodes submitting the same `idempotency_key` at once store one job: one submission is
/// created, every other one is a replay of it (never an error).
pub async fn concurrent_create_with_one_idempotency_key_stores_one_job(h: Harness) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { h.store.clone() } else { h.other.clone() };
        let now = h.now;
        tasks.push(tokio::spawn(async move {
            let r = JobRequest { idempotency_key: Some("same-key".into()), ..job("echo") };
            store.job_create_many(vec![submission(r)], now).await
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        let mut out = t.await.expect("task").expect("job_create_many");
        outcomes.push(out.remove(0).expect("a concurrent replay is not an error"));
    }
    assert_eq!(outcomes.iter().filter(|o| o.created).count(), 1, "exactly one submission creates the job");
    let id = &outcomes[0].job.id;
    assert!(outcomes.iter().all(|o| &o.job.id == id), "every submission answers with the one job");
    assert_eq!(h.all_jobs().await.len(), 1);
    assert_eq!(h.runs(id).await.len(), 1);
}

/// Two nodes submitting the same 50 names at once, in opposite orders, for five rounds: each
/// name is stored once; of a pair, one is created and the other a replay, or (once a round
/// changes the definition) both are refused or one replays the other's definition.
pub async fn concurrent_batches_racing_on_names_store_each_name_once(h: Harness) {
    let batch = |rev: bool, payload: u64| {
        let mut v: Vec<JobCreate> = (0..50)
            .map(|i| {
                let r = JobRequest {
                    name: Some(format!("job-{i}")),
                    payload: Some(json!({"p": payload})),
                    triggers: Some(vec![every(60)]),
                    ..job("echo")
                };
                submission(r)
            })
            .collect();
        if rev {
            v.reverse();
        }
        v
    };
    for round in 0..5 {
        let (ra, rb) = tokio::join!(
            h.store.job_create_many(batch(false, round), h.now),
            h.other.job_create_many(batch(true, round), h.now)
        );
        let (ra, rb) = (ra.expect("job_create_many"), rb.expect("job_create_many"));
        for (x, y) in ra.iter().zip(rb.iter().rev()) {
            match (x, y) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(x.job.id, y.job.id, "same definition: one job, the other a replay");
                    if round == 0 {
                        assert!(x.created ^ y.created, "one creates, the other replays");
                    } else {
                        assert!(!x.created || !y.created);
                    }
                }
                (Err(StoreError::Conflict { code: "name_conflict", .. }), Err(StoreError::Conflict { .. }))
                    if round > 0 => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    assert_eq!(h.all_jobs().await.len(), 50);
}

/// Claims the one due run of `worker_id` at `now` and ends it so; the settled run.
async fn end_one(h: &Harness, worker_id: &str, now: Timestamp, state: RunState) -> Run {
    let c = h.claim_one(worker_id, now).await;
    h.complete(completion(&c, worker_id, state), now).await.expect("complete")
}

/// `pause_after_failures`: runs that end `failed` or `timed_out` after their own retries count
/// (an attempt that is retried does not), manual runs included; the run that completes the
/// streak pauses the job with a reason, in its settling transaction, so another handle sees it
/// at once and the job's triggers stop.
pub async fn pause_after_failures_pauses_the_job_when_that_many_runs_in_a_row_fail(h: Harness) {
    let r = JobRequest {
        retry: Some(retry(2, 1, 1)),
        triggers: Some(vec![every(1000)]),
        pause_after_failures: Some(2),
        ..job("echo")
    };
    let j = h.create(r, h.now).await;
    assert_eq!((j.pause_after_failures, j.paused_reason.as_deref()), (Some(2), None));
    let w = h.worker(&["echo"], h.now).await;
    h.store.job_run_now(&j.id, h.t(1.0)).await.expect("run_now");
    let retried = end_one(&h, &w.id, h.t(1.0), RunState::Failed).await;
    assert_eq!(retried.state, RunState::Pending, "an attempt that is retried is not a run's end");
    let first = end_one(&h, &w.id, h.t(3.0), RunState::TimedOut).await;
    assert_eq!(first.state, RunState::TimedOut);
    let after_one = h.other.job_get(&j.id, h.t(3.0)).await.expect("job_get");
    assert_eq!((after_one.paused, after_one.paused_reason), (false, None), "one of two");

    h.store.job_run_now(&j.id, h.t(4.0)).await.expect("run_now");
    end_one(&h, &w.id, h.t(4.0), RunState::Failed).await;
    let second = end_one(&h, &w.id, h.t(6.0), RunState::Failed).await;
    assert_eq!(second.state, RunState::Failed);
    let paused = h.other.job_get(&j.id, h.t(6.0)).await.expect("job_get");
    assert!(paused.paused, "the second failed run in a row pauses the job");
    assert_eq!(paused.paused_reason.as_deref(), Some("paused after 2 runs in a row failed"));
    assert_eq!(h.fire(h.t(5000.0)).await.triggers, 0, "a paused job's trigger does not fire");
}

/// A `succeeded` run resets the count; `cancelled` runs neither count nor reset it; an expired
/// lease on the last attempt (the reaper's `failed`) counts like a reported failure.
pub async fn pause_after_failures_count_is_reset_by_success_and_untouched_by_cancelled_runs(h: Harness) {
    let r = JobRequest {
        pause_after_failures: Some(2),
        retry: Some(retry(1, 1, 1)),
        triggers: Some(vec![every(1000)]),
        ..job("echo")
    };
    let j = h.create(r, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let step = |s: f64| h.t(s);
    let mut at = 1.0;
    for state in [RunState::Failed, RunState::Succeeded, RunState::Failed, RunState::Cancelled] {
        h.store.job_run_now(&j.id, step(at)).await.expect("run_now");
        assert_eq!(end_one(&h, &w.id, step(at), state).await.state, state);
        let job = h.job(&j.id, step(at)).await;
        assert!(!job.paused, "after {state:?}: no two failed runs in a row yet");
        at += 1.0;
    }
    // The run after the cancelled one is the second failure in a row: its lease expires.
    h.store.job_run_now(&j.id, step(at)).await.expect("run_now");
    let c = h.claim_one(&w.id, step(at)).await;
    let report = h.reap(step(at) + chrono::TimeDelta::seconds(LEASE.as_secs() as i64 + 1)).await;
    assert_eq!(report.expired, vec![(c.run_id.clone(), RunState::Failed)]);
    let job = h.other.job_get(&j.id, step(at + 100.0)).await.expect("job_get");
    assert!(job.paused, "the reaper's failed run completes the streak");
    assert_eq!(job.paused_reason.as_deref(), Some("paused after 2 runs in a row failed"));
}

/// A resume clears `paused_reason` and resets the count; an operator's pause has no reason;
/// dropping the threshold stops the counting.
pub async fn pause_after_failures_resume_clears_the_reason_and_resets_the_count(h: Harness) {
    let r = JobRequest {
        pause_after_failures: Some(2),
        retry: Some(retry(1, 1, 1)),
        triggers: Some(vec![every(1000)]),
        ..job("echo")
    };
    let j = h.create(r, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    let fail = |at: f64| {
        let h = h.clone();
        let (job, worker) = (j.id.clone(), w.id.clone());
        async move {
            h.store.job_run_now(&job, h.t(at)).await.expect("run_now");
            end_one(&h, &worker, h.t(at), RunState::Failed).await;
            h.job(&job, h.t(at)).await
        }
    };
    fail(1.0).await;
    assert!(fail(2.0).await.paused);
    let resumed = h.store.job_set_paused(&j.id, false, h.t(3.0)).await.expect("resume");
    assert_eq!((resumed.paused, resumed.paused_reason), (false, None), "resume clears the reason");
    assert!(!fail(4.0).await.paused, "the count starts again from resume");
    let again = fail(5.0).await;
    assert_eq!((again.paused, again.paused_reason.as_deref()), (true, Some("paused after 2 runs in a row failed")));

    let operator = h.store.job_set_paused(&j.id, false, h.t(6.0)).await.expect("resume");
    assert!(!operator.paused);
    let operator = h.store.job_set_paused(&j.id, true, h.t(6.0)).await.expect("pause");
    assert_eq!((operator.paused, operator.paused_reason), (true, None), "an operator's pause has no reason");
    h.store.job_set_paused(&j.id, false, h.t(7.0)).await.expect("resume");
    let mut unset = spec(JobRequest { retry: Some(retry(1, 1, 1)), triggers: Some(vec![every(1000)]), ..job("echo") });
    unset.name = Some(j.name.clone());
    let updated = h.store.job_update(&j.id, unset, h.t(8.0)).await.expect("job_update");
    assert_eq!(updated.pause_after_failures, None);
    fail(9.0).await;
    assert!(!fail(10.0).await.paused, "without a threshold nothing pauses");
}

/// Two nodes settling the last two failures of a streak at once still pause the job: the
/// count is kept under the job's row lock, so neither misses the other's failure.
pub async fn concurrent_failures_on_two_handles_still_pause_the_job(h: Harness) {
    const JOBS: usize = 24;
    let mut jobs = Vec::new();
    for _ in 0..JOBS {
        let r = JobRequest {
            pause_after_failures: Some(2),
            retry: Some(retry(1, 1, 1)),
            triggers: Some(vec![every(1000)]),
            ..job("echo")
        };
        let j = h.create(r, h.now).await;
        for _ in 0..2 {
            h.store.job_run_now(&j.id, h.now).await.expect("run_now");
        }
        jobs.push(j);
    }
    let w = h.store.worker_register("w", &["echo".to_string()], 100, None, h.now).await.expect("register");
    let claimed = h.claim(&w.id, 100, h.t(1.0)).await;
    assert_eq!(claimed.len(), 2 * JOBS, "two runs of each job claimed");
    let mut by_job: HashMap<String, Vec<Completion>> = HashMap::new();
    for c in &claimed {
        by_job.entry(c.job_id.clone()).or_default().push(completion(c, &w.id, RunState::Failed));
    }
    // Every completion starts at once, each job's two on different handles.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(2 * JOBS));
    let mut tasks = Vec::new();
    for pair in by_job.into_values() {
        for (i, c) in pair.into_iter().enumerate() {
            let store = if i == 0 { h.store.clone() } else { h.other.clone() };
            let (start, now) = (start.clone(), h.t(2.0));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let out = store.run_complete_many(vec![c], now).await.expect("run_complete_many");
                assert!(out.into_iter().all(|o| o.is_ok()), "each completion settles");
            }));
        }
    }
    for t in tasks {
        t.await.expect("task");
    }
    for j in jobs {
        let got = h.job(&j.id, h.t(3.0)).await;
        assert!(got.paused, "job {}: two failed runs in a row, settled at once on two nodes", j.id);
        assert_eq!(got.paused_reason.as_deref(), Some("paused after 2 runs in a row failed"));
    }
}

/// Lists narrowed to a set of namespaces (a namespace-bound token's) come in full pages whose
/// cursors go on where they end, for jobs and runs alike; an empty set matches nothing.
pub async fn list_narrowed_to_a_set_of_namespaces_has_full_pages_and_follows_cursors(h: Harness) {
    let mut want = Vec::new();
    for i in 0..9 {
        let ns = ["a", "b", "c"][i % 3];
        let j = h.create(JobRequest { namespace: Some(ns.into()), ..job("echo") }, h.t(i as f64)).await;
        if ns != "b" {
            want.push(j.id);
        }
    }
    want.reverse();
    let set = Some(vec!["a".to_string(), "c".to_string()]);
    let mut f = JobFilter { namespaces: set.clone(), limit: 2, ..Default::default() };
    let (mut jobs, mut pages) = (Vec::new(), Vec::new());
    loop {
        let page = h.store.job_list(&f, h.now).await.expect("job_list");
        pages.push(page.items.len());
        jobs.extend(page.items.into_iter().map(|j| j.id));
        match page.next_cursor {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(jobs, want, "every job of a and c, newest first, once");
    assert_eq!(pages, vec![2, 2, 2], "full pages");
    let mut f = RunFilter { namespaces: set, limit: 2, ..Default::default() };
    let (mut runs, mut pages) = (Vec::new(), Vec::new());
    loop {
        let page = h.store.run_list(&f).await.expect("run_list");
        pages.push(page.items.len());
        runs.extend(page.items.into_iter().map(|r| r.job_id));
        match page.next_cursor {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(runs, want, "the runs of those jobs, newest first, once");
    assert_eq!(pages, vec![2, 2, 2], "full pages");
    let none = JobFilter { namespaces: Some(Vec::new()), limit: 10, ..Default::default() };
    assert!(h.store.job_list(&none, h.now).await.expect("job_list").items.is_empty());
    let none = RunFilter { namespaces: Some(Vec::new()), limit: 10, ..Default::default() };
    assert!(h.store.run_list(&none).await.expect("run_list").items.is_empty());
}

/// A write dropped part-way (a claim whose caller timed out, a client that went away) never
/// leaves the store unable to write: every later write still commits. Drops land at every point
/// of the call, the start of its transaction included, across timeouts from 0 to ~2 ms, for a
/// submission and a single-statement write alike.
pub async fn create_dropped_part_way_leaves_the_store_writable(h: Harness) {
    use crate::domain::{LimitBounds, LimitKey};
    let key = LimitKey::parse("k").expect("key");
    let bounds = LimitBounds { max_running: Some(1), rate: None };
    for i in 0..400u64 {
        let wait = Duration::from_micros((i * 37) % 2000);
        if i % 2 == 0 {
            let _ = tokio::time::timeout(wait, h.store.job_create_many(vec![submission(job("echo"))], h.now)).await;
        } else {
            let _ = tokio::time::timeout(wait, h.store.limit_put(&key, bounds, h.now)).await;
        }
        let next = tokio::time::timeout(Duration::from_secs(10), h.store.limit_put(&key, bounds, h.now)).await;
        match next {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("write {i} after a dropped one failed: {e}"),
            Err(_) => panic!("write {i} after a dropped one did not finish in 10 s"),
        }
    }
}
