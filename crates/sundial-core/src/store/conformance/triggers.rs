//! Triggers: firing once per due time (guarantee 2), misfire and overlap policies, `max_fires`.

use super::*;
use crate::domain::Overlap;

/// The trigger of a job (the cases give each job one).
async fn only_trigger(h: &Harness, job_id: &str, now: Timestamp) -> crate::domain::Trigger {
    let mut j = h.job(job_id, now).await;
    assert_eq!(j.triggers.len(), 1);
    j.triggers.remove(0)
}

/// One pass creates one `pending` run per due time up to `now` and advances the trigger past
/// them; a second pass at the same `now` creates nothing.
pub async fn fire_due_creates_one_run_per_due_time_and_advances(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![every(1)]), ..job("echo") }, h.now).await;
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), Some(h.t(1.0)));
    assert_eq!(h.fire(h.t(0.5)).await, FireReport::default(), "nothing is due yet");

    let report = h.fire(h.t(3.5)).await;
    assert_eq!(
        report,
        FireReport { triggers: 1, runs_pending: 3, runs_skipped: 0, runs_cancel_requested: 0, misfires: vec![] }
    );
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>(), [h.t(1.0), h.t(2.0), h.t(3.0)]);
    let t = only_trigger(&h, &j.id, h.t(3.5)).await;
    for r in &runs {
        assert_eq!((r.state, r.attempt, r.reason.as_deref()), (RunState::Pending, 0, None));
        assert_eq!(r.trigger_id.as_deref(), Some(t.id.as_str()));
        assert_eq!(r.job_id, j.id);
    }
    assert_eq!((t.next_fire_at, t.fires), (Some(h.t(4.0)), 3));
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), Some(h.t(4.0)));

    assert_eq!(h.fire(h.t(3.5)).await, FireReport::default(), "the same due window fires once");
    assert_eq!(h.other.trigger_fire_due(h.t(3.5), 1000, MISFIRE_THRESHOLD).await.expect("fire"), FireReport::default());
    assert_eq!(h.runs(&j.id).await.len(), 3);
}

/// Guarantee 2 under a race: two nodes firing the same due windows over and over, at the same
/// time, create exactly one run per (trigger, due time), with no gap; the reports add up to the
/// runs created.
pub async fn concurrent_fire_due_on_two_handles_creates_each_run_once(h: Harness) {
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(
            h.create(JobRequest { name: Some(format!("j{i}")), triggers: Some(vec![every(1)]), ..job("echo") }, h.now)
                .await,
        );
    }
    let steps: Vec<Timestamp> = (1..=60).map(|i| h.t(f64::from(i) * 0.5)).collect();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { h.store.clone() } else { h.other.clone() };
        let steps = steps.clone();
        tasks.push(tokio::spawn(async move {
            let mut created = 0;
            for now in steps {
                let r = store.trigger_fire_due(now, 1000, MISFIRE_THRESHOLD).await.expect("trigger_fire_due");
                created += r.runs_pending + r.runs_skipped;
            }
            created
        }));
    }
    let mut reported = 0;
    for t in tasks {
        reported += t.await.expect("task");
    }
    let expected: Vec<Timestamp> = (1..=30).map(|s| h.t(f64::from(s))).collect();
    for j in &jobs {
        let runs = h.runs(&j.id).await;
        let times: Vec<Timestamp> = runs.iter().map(|r| r.scheduled_for).collect();
        assert_eq!(times, expected, "job {}: one run per due time, no duplicate, no gap", j.name);
        assert!(runs.iter().all(|r| r.state == RunState::Pending));
        let t = only_trigger(&h, &j.id, h.t(30.0)).await;
        assert_eq!((t.fires, t.next_fire_at), (30, Some(h.t(31.0))));
    }
    assert_eq!(reported, 4 * 30, "fire reports count the runs actually created, once");
}

/// The scheduler's work grows with the number of due triggers, not stored ones: with 2000
/// triggers far in the future and 3 due, a pass limited to 3 finds exactly the 3 due ones.
pub async fn fire_due_cost_ignores_far_future_triggers(h: Harness) {
    let far = h.t(365.0 * 86_400.0);
    let batch: Vec<JobCreate> =
        (0..2000).map(|_| submission(JobRequest { triggers: Some(vec![once(far)]), ..job("echo") })).collect();
    let out = h.store.job_create_many(batch, h.now).await.expect("job_create_many");
    assert!(out.iter().all(|o| o.as_ref().is_ok_and(|c| c.created)));
    let mut due = Vec::new();
    for _ in 0..3 {
        due.push(h.create(JobRequest { triggers: Some(vec![once(h.now)]), ..job("echo") }, h.now).await);
    }
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), Some(h.now));

    let report = h.store.trigger_fire_due(h.t(1.0), 3, MISFIRE_THRESHOLD).await.expect("trigger_fire_due");
    assert_eq!((report.triggers, report.runs_pending), (3, 3), "{report:?}");
    for j in &due {
        assert_eq!(h.runs(&j.id).await.len(), 1);
    }
    assert_eq!(h.fire(h.t(1.0)).await.triggers, 0, "nothing else is due");
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), Some(far));
}

/// A `once` trigger fires at its instant (kept to the microsecond), once, and then has no next
/// fire time.
pub async fn once_trigger_fires_once_at_its_time(h: Harness) {
    let at = h.t(100.123_456);
    let j = h.create(JobRequest { triggers: Some(vec![once(at)]), ..job("echo") }, h.now).await;
    assert_eq!(j.next_fire_time, Some(at));
    assert_eq!(h.job(&j.id, h.now).await.next_fire_time, Some(at), "no drift storing and reading instants");
    assert_eq!(h.fire(at - chrono::TimeDelta::microseconds(1)).await, FireReport::default());
    assert_eq!(h.fire(at).await.runs_pending, 1);
    assert_eq!(h.fire(h.t(200.0)).await, FireReport::default());
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>(), [at]);
    let t = only_trigger(&h, &j.id, h.t(200.0)).await;
    assert_eq!((t.next_fire_at, t.fires), (None, 1));
    assert_eq!(h.job(&j.id, h.t(200.0)).await.next_fire_time, None);
}

/// Every 60 s from T+60, reached at T+630 with a 60 s threshold: T+60 … T+540 (9 times) are
/// missed, T+600 is on time.
async fn an_interval_nine_times_behind(
    h: &Harness,
    misfire: Misfire,
    catch_up_limit: Option<u32>,
) -> (Job, FireReport) {
    let trigger = crate::domain::trigger::TriggerWire { catch_up_limit, ..with_misfire(every(60), misfire) };
    let j = h.create(JobRequest { triggers: Some(vec![trigger]), ..job("echo") }, h.now).await;
    let report = h.fire(h.t(630.0)).await;
    let t = only_trigger(h, &j.id, h.t(630.0)).await;
    assert_eq!((t.fires, t.next_fire_at), (10, Some(h.t(660.0))), "every due time counts toward fires");
    assert_eq!((t.spec.misfire, t.spec.catch_up_limit), (misfire, catch_up_limit), "the policy round-trips");
    let counted = Misfired { policy: misfire, job_id: j.id.clone(), trigger_id: t.id.clone(), count: 9 };
    assert_eq!(report.misfires, [counted], "the report counts every missed time, whatever the policy");
    (j, report)
}

/// `skip`: the missed times become one `skipped` run at the latest missed time, its reason
/// counting them; the on-time one runs.
pub async fn misfire_skip_records_a_skipped_run_with_reason(h: Harness) {
    let (j, report) = an_interval_nine_times_behind(&h, Misfire::Skip, None).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (1, 1), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    let skipped = &runs[0];
    assert_eq!((skipped.state, skipped.scheduled_for), (RunState::Skipped, h.t(540.0)));
    let reason = skipped.reason.as_deref().expect("a skipped run says why");
    assert!(reason.contains("9 missed"), "reason counts the missed times: {reason}");
    assert!(skipped.finished_at.is_some(), "a skipped run is finished");
    assert_eq!(
        (runs[1].state, runs[1].scheduled_for, runs[1].reason.as_deref()),
        (RunState::Pending, h.t(600.0), None)
    );

    let f = RunFilter { state: Some(RunState::Skipped), limit: 10, ..Default::default() };
    assert_eq!(h.store.run_list(&f).await.expect("run_list").items.len(), 1, "the skip is visible in the API");
}

/// `fire_once`: one run for the latest missed time, its reason counting the missed times.
pub async fn misfire_fire_once_records_one_run_with_count_reason(h: Harness) {
    let (j, report) = an_interval_nine_times_behind(&h, Misfire::FireOnce, None).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (2, 0), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(
        runs.iter().map(|r| (r.state, r.scheduled_for)).collect::<Vec<_>>(),
        [(RunState::Pending, h.t(540.0)), (RunState::Pending, h.t(600.0))]
    );
    let reason = runs[0].reason.as_deref().expect("the misfired run says why");
    assert!(reason.contains("9 missed"), "reason counts the missed times: {reason}");
    assert_eq!(runs[1].reason, None);
}

/// A misfire note lasts (API.md "Misfire notes last"): the claim, a heartbeat, a failed attempt,
/// the retry's claim and the last completion all keep it; the retry's own note comes after `; `.
pub async fn misfire_note_outlives_claims_heartbeats_completions_and_retries(h: Harness) {
    let trigger = with_misfire(every(60), Misfire::FireOnce);
    let req = JobRequest { triggers: Some(vec![trigger]), retry: Some(retry(2, 1, 1)), ..job("echo") };
    let j = h.create(req, h.now).await;
    h.fire(h.t(630.0)).await;
    let runs = h.runs(&j.id).await;
    let note = runs[0].reason.clone().expect("the misfired run says why");
    let w = h.worker(&["echo"], h.t(630.0)).await;
    // The on-time run is claimed too and finished, so only the noted run is left to retry.
    let (mut noted, on_time): (Vec<_>, Vec<_>) =
        h.claim(&w.id, 2, h.t(631.0)).await.into_iter().partition(|c| c.run_id == runs[0].id);
    assert_eq!((noted.len(), on_time.len()), (1, 1), "both due runs claimed");
    h.complete(completion(&on_time[0], &w.id, RunState::Succeeded), h.t(631.0)).await.expect("complete");
    let c = noted.remove(0);
    assert_eq!(h.run(&c.run_id).await.reason.as_deref(), Some(note.as_str()), "a claim keeps the note");
    h.heartbeat(&w.id, &held(&[&c]), h.t(632.0)).await.expect("heartbeat");
    assert_eq!(h.run(&c.run_id).await.reason.as_deref(), Some(note.as_str()), "a heartbeat keeps the note");
    let failure = Completion { error: Some("boom".into()), ..completion(&c, &w.id, RunState::Failed) };
    let r = h.complete(failure, h.t(633.0)).await.expect("complete");
    assert_eq!(r.state, RunState::Pending, "an attempt left: retried");
    let reason = r.reason.unwrap_or_default();
    let retry_note = reason.strip_prefix(&format!("{note}; ")).unwrap_or_else(|| panic!("note first: {reason}"));
    assert!(retry_note.contains("retry after"), "the retry's note follows: {reason}");
    let c = h.claim_one(&w.id, h.t(640.0)).await;
    assert_eq!(h.run(&c.run_id).await.reason.as_deref(), Some(note.as_str()), "the retry's claim keeps the note");
    let r = h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(641.0)).await.expect("complete");
    assert_eq!((r.state, r.reason.as_deref()), (RunState::Succeeded, Some(note.as_str())), "success keeps the note");
}

/// `catch_up`: one run per missed time, oldest first, at most `catch_up_limit`; the last one's
/// reason counts the rest.
pub async fn misfire_catch_up_limits_and_counts(h: Harness) {
    let (j, report) = an_interval_nine_times_behind(&h, Misfire::CatchUp, Some(3)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (4, 0), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(
        runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>(),
        [h.t(60.0), h.t(120.0), h.t(180.0), h.t(600.0)]
    );
    assert!(runs.iter().all(|r| r.state == RunState::Pending));
    assert!(runs[..3].iter().all(|r| r.reason.is_some()), "replayed runs say they are catching up");
    let last = runs[2].reason.as_deref().unwrap_or_default();
    assert!(last.contains("6 more"), "the last replay counts the 6 not replayed: {last}");
    assert_eq!(runs[3].reason, None);
}

/// On resume, fire times missed while paused that are older than the threshold are misfires
/// and follow the trigger's policy.
pub async fn resume_applies_misfire_policy_to_times_missed_while_paused(h: Harness) {
    let j = h
        .create(JobRequest { triggers: Some(vec![with_misfire(every(60), Misfire::Skip)]), ..job("echo") }, h.now)
        .await;
    h.store.job_set_paused(&j.id, true, h.t(1.0)).await.expect("pause");
    assert_eq!(h.fire(h.t(300.0)).await, FireReport::default());
    h.store.job_set_paused(&j.id, false, h.t(630.0)).await.expect("resume");
    let report = h.fire(h.t(630.0)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (1, 1), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(
        runs.iter().map(|r| (r.state, r.scheduled_for)).collect::<Vec<_>>(),
        [(RunState::Skipped, h.t(540.0)), (RunState::Pending, h.t(600.0))]
    );
}

/// A trigger stops after `max_fires` due times: no next fire time, `fires == max_fires`.
pub async fn max_fires_stops_trigger(h: Harness) {
    let trigger = crate::domain::trigger::TriggerWire { max_fires: Some(3), ..every(1) };
    let j = h.create(JobRequest { triggers: Some(vec![trigger]), ..job("echo") }, h.now).await;
    let report = h.fire(h.t(10.0)).await;
    assert_eq!((report.triggers, report.runs_pending), (1, 3), "{report:?}");
    let runs = h.runs(&j.id).await;
    assert_eq!(runs.iter().map(|r| r.scheduled_for).collect::<Vec<_>>(), [h.t(1.0), h.t(2.0), h.t(3.0)]);
    let t = only_trigger(&h, &j.id, h.t(10.0)).await;
    assert_eq!((t.next_fire_at, t.fires), (None, 3));
    assert_eq!(h.job(&j.id, h.t(10.0)).await.next_fire_time, None);
    assert_eq!(h.store.trigger_next_due().await.expect("trigger_next_due"), None);
    assert_eq!(h.fire(h.t(20.0)).await, FireReport::default());
    assert_eq!(h.runs(&j.id).await.len(), 3);
}

/// A job every 10 s with `overlap`, its first run (T+10) fired and claimed by a new worker.
async fn first_run_running(h: &Harness, overlap: Overlap) -> (Job, Worker, ClaimedRun) {
    let j =
        h.create(JobRequest { overlap: Some(overlap), triggers: Some(vec![every(10)]), ..job("echo") }, h.now).await;
    let w = h.worker(&["echo"], h.now).await;
    assert_eq!(h.fire(h.t(10.0)).await.runs_pending, 1);
    let c = h.claim_one(&w.id, h.t(10.0)).await;
    (j, w, c)
}

/// `overlap: skip`: a fire while a run is running records a `skipped` run naming it; once it
/// finished, fires run again.
pub async fn overlap_skip_records_skipped_run_while_one_runs(h: Harness) {
    let (j, w, c) = first_run_running(&h, Overlap::Skip).await;
    let report = h.fire(h.t(20.0)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (0, 1), "{report:?}");
    let runs = h.runs(&j.id).await;
    let skipped = &runs[1];
    assert_eq!((skipped.state, skipped.scheduled_for), (RunState::Skipped, h.t(20.0)));
    let reason = skipped.reason.as_deref().expect("a skipped run says why");
    assert!(reason.contains(&c.run_id), "the reason names the running run: {reason}");

    h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(25.0)).await.expect("complete");
    let report = h.fire(h.t(30.0)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (1, 0), "{report:?}");
}

/// `overlap: buffer_one`: one run waits `pending` (not claimable) behind the running one,
/// further fires are `skipped`, and the waiting run is claimable once the running one finished.
pub async fn overlap_buffer_one_holds_one_run_until_the_running_one_finishes_then_it_is_claimable(h: Harness) {
    let (j, w, c) = first_run_running(&h, Overlap::BufferOne).await;
    let report = h.fire(h.t(20.0)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (1, 0), "{report:?}");
    let buffered = h.runs(&j.id).await.remove(1);
    assert_eq!((buffered.state, buffered.scheduled_for), (RunState::Pending, h.t(20.0)));
    assert!(h.claim(&w.id, 10, h.t(21.0)).await.is_empty(), "the buffered run waits for the running one");

    let report = h.fire(h.t(30.0)).await;
    assert_eq!((report.runs_pending, report.runs_skipped), (0, 1), "one run is buffered at most: {report:?}");
    assert_eq!(h.runs(&j.id).await[2].state, RunState::Skipped);
    assert!(h.claim(&w.id, 10, h.t(30.0)).await.is_empty());

    h.complete(completion(&c, &w.id, RunState::Succeeded), h.t(31.0)).await.expect("complete");
    let next = h.claim_one(&w.id, h.t(31.0)).await;
    assert_eq!(next.run_id, buffered.id, "the buffered run goes once the running one finished");
}

/// `overlap: cancel_other`: the running run is flagged `cancel_requested` (told at its next
/// heartbeat) and the new run is claimable at once.
pub async fn overlap_cancel_other_flags_running_run_and_creates_new_pending(h: Harness) {
    let (j, w, c) = first_run_running(&h, Overlap::CancelOther).await;
    let report = h.fire(h.t(20.0)).await;
    assert_eq!((report.runs_pending, report.runs_cancel_requested), (1, 1), "{report:?}");
    let old = h.run(&c.run_id).await;
    assert_eq!((old.state, old.cancel_requested), (RunState::Running, true));
    let new = h.runs(&j.id).await.remove(1);
    assert_eq!((new.state, new.scheduled_for), (RunState::Pending, h.t(20.0)));

    let w2 = h.worker(&["echo"], h.t(20.0)).await;
    let started = h.claim_one(&w2.id, h.t(20.0)).await;
    assert_eq!(started.run_id, new.id, "the new run starts without waiting for the old one");

    let hb = h.heartbeat(&w.id, &held(&[&c]), h.t(21.0)).await.expect("heartbeat");
    assert_eq!(hb.cancel, vec![c.run_id.clone()]);
    let done = h.complete(completion(&c, &w.id, RunState::Cancelled), h.t(22.0)).await.expect("complete");
    assert_eq!(done.state, RunState::Cancelled);
}
