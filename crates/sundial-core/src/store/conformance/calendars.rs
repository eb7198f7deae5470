//! Calendars: stored global objects that triggers name; a due time a calendar excludes is not
//! a fire (no run, not counted, not a misfire), and a change applies from the next fire on.
//! Backfills: one run per past due time that has none, once.

use super::*;
use crate::domain::{BackfillOutcome, BackfillRequest, CalendarDef, Overlap};
use crate::schedule::Calendar;
use serde_json::json;

/// Puts calendar `name` (UTC) with `exclude` at `now`.
async fn put(h: &Harness, name: &str, exclude: serde_json::Value, now: Timestamp) -> CalendarDef {
    let entries = exclude.as_array().expect("an array").clone();
    let cal = Calendar::new(name, None, &entries).expect("valid calendar");
    h.store.calendar_put(&cal, &entries, now).await.expect("calendar_put")
}

/// A trigger naming `calendars`.
fn naming(trigger: TriggerWire, calendars: &[&str]) -> TriggerWire {
    TriggerWire { calendars: calendars.iter().map(|c| c.to_string()).collect(), ..trigger }
}

/// The job's only trigger's `(next_fire_at, fires)`.
async fn progress(h: &Harness, job_id: &str, now: Timestamp) -> (Option<Timestamp>, u64) {
    let j = h.job(job_id, now).await;
    (j.triggers[0].next_fire_at, j.triggers[0].fires)
}

/// The `fire_time`s of the job's runs, oldest first.
async fn fire_times(h: &Harness, job_id: &str) -> Vec<Timestamp> {
    let mut times: Vec<Timestamp> = h.runs(job_id).await.iter().map(|r| r.fire_time).collect();
    times.sort();
    times
}

fn backfill(from: Timestamp, until: Timestamp) -> BackfillRequest {
    BackfillRequest { from, until, trigger_id: None, overlap: None }
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, field: &str) {
    match r {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with(&format!("{field}: ")), "{m}"),
        other => panic!("expected Invalid on {field}, got {other:?}"),
    }
}

/// A calendar written is read back, listed and deleted as written.
pub async fn calendar_put_get_list_delete_round_trip(h: Harness) {
    let exclude = json!([{"date": "2026-12-25"}, {"cron": "* * * * SAT,SUN"}]);
    let c = put(&h, "holidays", exclude.clone(), h.now).await;
    assert_eq!((c.name.as_str(), c.timezone.as_str(), c.created_at, c.updated_at), ("holidays", "UTC", h.now, h.now));
    assert_eq!(json!(c.exclude), exclude, "exclude is echoed as sent");
    // A replace keeps created_at and moves updated_at.
    let berlin = Calendar::new("holidays", Some("Europe/Berlin"), &[]).expect("valid");
    let r = h.store.calendar_put(&berlin, &[], h.t(5.0)).await.expect("replace");
    assert_eq!(
        (r.timezone.as_str(), r.exclude.len(), r.created_at, r.updated_at),
        ("Europe/Berlin", 0, h.now, h.t(5.0))
    );
    put(&h, "a-first", json!([]), h.now).await;
    let names: Vec<String> = h.other.calendar_list().await.expect("list").into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["a-first", "holidays"], "by name");
    assert_eq!(h.other.calendar_get("holidays").await.expect("get"), r);
    h.store.calendar_delete("holidays").await.expect("delete");
    assert_not_found(h.store.calendar_get("holidays").await, "deleted calendar");
    assert_not_found(h.store.calendar_delete("holidays").await, "second delete");
}

/// A calendar a trigger names cannot be deleted until no trigger names it.
pub async fn calendar_in_use_cannot_be_deleted_until_no_trigger_names_it(h: Harness) {
    put(&h, "hol", json!([]), h.now).await;
    let j = h.create(JobRequest { triggers: Some(vec![naming(every(60), &["hol"])]), ..job("echo") }, h.now).await;
    assert_eq!(j.triggers[0].spec.calendars, ["hol"]);
    assert_conflict(h.store.calendar_delete("hol").await, "calendar_in_use");
    let mut plain = spec(j.to_request());
    plain.triggers[0].calendars.clear();
    h.store.job_update(&j.id, plain, h.t(1.0)).await.expect("update");
    h.store.calendar_delete("hol").await.expect("no trigger names it any more");
}

/// Excluded due times make no run, do not count toward `fires` or `max_fires`, are no misfire,
/// and `next_fire_at` never rests on one (also the first).
pub async fn excluded_due_times_are_not_fires(h: Harness) {
    // Every minute from 08:01; 08:01 and 08:03-08:04 excluded.
    let exclude = json!([
        {"from": "2026-11-24T08:01:00", "until": "2026-11-24T08:02:00"},
        {"from": "2026-11-24T08:03:00", "until": "2026-11-24T08:05:00"}
    ]);
    put(&h, "gaps", exclude, h.now).await;
    let trigger = TriggerWire { max_fires: Some(3), ..naming(every(60), &["gaps"]) };
    let j = h.create(JobRequest { triggers: Some(vec![trigger]), ..job("echo") }, h.now).await;
    assert_eq!(j.triggers[0].next_fire_at, Some(h.t(120.0)), "the first fire passes over 08:01");
    let report = h.fire(h.t(150.0)).await;
    assert_eq!((report.runs_pending, report.misfires.len()), (1, 0));
    assert_eq!(progress(&h, &j.id, h.t(150.0)).await, (Some(h.t(300.0)), 1), "next passes over 08:03, 08:04");
    // Long after (every time missed): still no misfire for the excluded ones, and max_fires
    // counts fires only: 08:02, 08:05, 08:06.
    let report = h.fire(h.t(3600.0)).await;
    assert_eq!(report.misfires.iter().map(|m| m.count).sum::<u64>(), 2, "08:05 and 08:06 missed, not 08:03/08:04");
    assert_eq!(progress(&h, &j.id, h.t(3600.0)).await, (None, 3));
    let runs = h.runs(&j.id).await;
    assert!(runs.iter().all(|r| ![h.t(60.0), h.t(180.0), h.t(240.0)].contains(&r.fire_time)), "{runs:?}");
}

/// A calendar change applies from the next fire on: times it frees before a stored
/// `next_fire_at` come back, times it excludes stop being fires, even once planned as due.
pub async fn calendar_change_applies_from_the_next_fire_on(h: Harness) {
    put(&h, "c", json!([]), h.now).await;
    let j = h.create(JobRequest { triggers: Some(vec![naming(every(60), &["c"])]), ..job("echo") }, h.now).await;
    assert_eq!(progress(&h, &j.id, h.now).await, (Some(h.t(60.0)), 0));
    let skip_two = json!([{"from": "2026-11-24T08:01:00", "until": "2026-11-24T08:03:00"}]);
    put(&h, "c", skip_two, h.t(10.0)).await;
    assert_eq!(progress(&h, &j.id, h.t(10.0)).await, (Some(h.t(180.0)), 0), "moved past the new exclusion");
    put(&h, "c", json!([]), h.t(20.0)).await;
    assert_eq!(progress(&h, &j.id, h.t(20.0)).await, (Some(h.t(60.0)), 0), "freed times come back");
    // Due already (08:01 <= now) when the calendar comes to exclude it: not a fire.
    let skip_one = json!([{"from": "2026-11-24T08:01:00", "until": "2026-11-24T08:02:00"}]);
    put(&h, "c", skip_one, h.t(90.0)).await;
    h.fire(h.t(90.0)).await;
    assert!(h.runs(&j.id).await.is_empty());
    assert_eq!(progress(&h, &j.id, h.t(90.0)).await, (Some(h.t(120.0)), 0));
}

/// One run per due time in `[from, until)` that has none, due now, `fire_time` the due time,
/// reason `backfill` for good; a second backfill creates none; times with a run are `existing`;
/// neither `fires` nor `next_fire_at` changes.
pub async fn backfill_creates_one_run_per_due_time_once(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![cron("0 * * * *")]), ..job("echo") }, h.now).await;
    let before = progress(&h, &j.id, h.now).await;
    assert_eq!(before, (Some(h.t(3600.0)), 0));
    let req = backfill(h.t(-10.0 * 3600.0), h.now);
    let out = h.store.job_backfill(&j.id, &req, h.t(1.0)).await.expect("backfill");
    assert_eq!(out, BackfillOutcome { created: 10, existing: 0 });
    let runs = h.runs(&j.id).await;
    assert!(runs.iter().all(|r| r.scheduled_for == h.t(1.0) && r.reason.as_deref() == Some("backfill")), "{runs:?}");
    assert_eq!(fire_times(&h, &j.id).await, (1..=10).rev().map(|k| h.t(-3600.0 * k as f64)).collect::<Vec<_>>());
    assert_eq!(progress(&h, &j.id, h.t(1.0)).await, before, "fires and next_fire_at unchanged");
    let again = h.other.job_backfill(&j.id, &req, h.t(2.0)).await.expect("again");
    assert_eq!(again, BackfillOutcome { created: 0, existing: 10 });
    // 09:00 fires on schedule; a backfill over 08:00-09:00 counts it and makes 08:00.
    h.fire(h.t(3600.0)).await;
    let out = h.store.job_backfill(&j.id, &backfill(h.now, h.t(3601.0)), h.t(3700.0)).await.expect("backfill");
    assert_eq!(out, BackfillOutcome { created: 1, existing: 1 });
    assert_eq!(h.runs(&j.id).await.len(), 12);
    // The note lasts through a claim.
    let w = h.worker(&["echo"], h.t(3700.0)).await;
    let claimed = h.claim(&w.id, 20, h.t(3700.0)).await;
    assert_eq!(claimed.len(), 12);
    let backfilled = h.runs(&j.id).await.into_iter().filter(|r| r.fire_time != h.t(3600.0)).collect::<Vec<_>>();
    assert!(backfilled.iter().all(|r| r.reason.as_deref() == Some("backfill")), "{backfilled:?}");
}

/// Due times follow `start_at` and calendars (also before the trigger existed); `max_fires` does
/// not apply; `trigger_id` picks one trigger.
pub async fn backfill_follows_window_and_calendars_not_max_fires(h: Harness) {
    put(&h, "no-five", json!([{"from": "2026-11-24T05:00:00", "until": "2026-11-24T06:00:00"}]), h.now).await;
    let hourly = TriggerWire { max_fires: Some(1), start_at: Some(h.t(-5.0 * 3600.0)), ..cron("0 * * * *") };
    let other = cron("30 * * * *");
    let j =
        h.create(JobRequest { triggers: Some(vec![naming(hourly, &["no-five"]), other]), ..job("echo") }, h.now).await;
    let req = BackfillRequest { trigger_id: Some(j.triggers[0].id.clone()), ..backfill(h.t(-10.0 * 3600.0), h.now) };
    let out = h.store.job_backfill(&j.id, &req, h.now).await.expect("backfill");
    assert_eq!(out, BackfillOutcome { created: 4, existing: 0 });
    let hours = [-5.0, -4.0, -2.0, -1.0].map(|k| h.t(k * 3600.0));
    assert_eq!(fire_times(&h, &j.id).await, hours);
    // Both triggers: the other's ten half-hours too.
    let out = h.store.job_backfill(&j.id, &backfill(h.t(-10.0 * 3600.0), h.now), h.now).await.expect("backfill");
    assert_eq!(out, BackfillOutcome { created: 10, existing: 4 });
}

/// Backfill refuses a range that is empty, in the future or too long, and a trigger of another job.
pub async fn backfill_refuses_bad_ranges_and_foreign_triggers(h: Harness) {
    let j = h.create(JobRequest { triggers: Some(vec![every(1)]), ..job("echo") }, h.now).await;
    let k = h.create(JobRequest { triggers: Some(vec![every(1)]), ..job("echo") }, h.now).await;
    assert_invalid(h.store.job_backfill(&j.id, &backfill(h.t(-60.0), h.t(1.0)), h.now).await, "until");
    assert_invalid(h.store.job_backfill(&j.id, &backfill(h.now, h.now), h.now).await, "until");
    // 10,000 due times fit; 10,001 do not.
    let out = h.store.job_backfill(&j.id, &backfill(h.t(-10_000.0), h.now), h.now).await.expect("10,000");
    assert_eq!(out.created, 10_000);
    assert_invalid(h.store.job_backfill(&j.id, &backfill(h.t(-10_001.0), h.now), h.now).await, "until");
    let foreign = BackfillRequest { trigger_id: Some(k.triggers[0].id.clone()), ..backfill(h.t(-60.0), h.now) };
    assert_invalid(h.store.job_backfill(&j.id, &foreign, h.now).await, "trigger_id");
    assert_not_found(h.store.job_backfill("nope", &backfill(h.t(-60.0), h.now), h.now).await, "unknown job");
    assert_eq!(h.runs(&k.id).await.len(), 0);
}

/// A paused job's backfill runs wait for resume; the request's overlap decides, not the job's.
pub async fn backfill_of_a_paused_job_waits_and_follows_the_requests_overlap(h: Harness) {
    let j = h.create(JobRequest { paused: Some(true), triggers: Some(vec![every(60)]), ..job("echo") }, h.now).await;
    let req = BackfillRequest { overlap: Some(Overlap::Skip), ..backfill(h.t(-300.0), h.now) };
    let out = h.store.job_backfill(&j.id, &req, h.now).await.expect("backfill");
    assert_eq!(out, BackfillOutcome { created: 5, existing: 0 });
    let runs = h.runs(&j.id).await;
    let pending = runs.iter().filter(|r| r.state == RunState::Pending).count();
    let skipped: Vec<_> = runs.iter().filter(|r| r.state == RunState::Skipped).collect();
    assert_eq!((pending, skipped.len()), (1, 4), "{runs:?}");
    assert!(skipped.iter().all(|r| r.reason.as_deref().is_some_and(|m| m.starts_with("backfill; overlap skip"))));
    let w = h.worker(&["echo"], h.now).await;
    assert!(h.claim(&w.id, 10, h.t(1.0)).await.is_empty(), "held while paused");
    h.store.job_set_paused(&j.id, false, h.t(2.0)).await.expect("resume");
    assert_eq!(h.claim(&w.id, 10, h.t(3.0)).await.len(), 1);
}

/// A trigger naming no stored calendar is refused on its path, that item alone.
pub async fn naming_an_unknown_calendar_refuses_that_item_only(h: Harness) {
    put(&h, "known", json!([]), h.now).await;
    let good = JobRequest { triggers: Some(vec![naming(every(60), &["known"])]), ..job("echo") };
    let bad = JobRequest { triggers: Some(vec![every(60), naming(every(60), &["known", "nope"])]), ..job("echo") };
    let out = h.store.job_create_many(vec![submission(good), submission(bad.clone())], h.now).await.expect("batch");
    assert!(out[0].is_ok(), "{:?}", out[0]);
    match &out[1] {
        Err(StoreError::Invalid(m)) => assert!(m.starts_with("triggers[1].calendars[1]: "), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let j = out[0].as_ref().expect("created").job.clone();
    assert_invalid(h.store.job_update(&j.id, spec(bad), h.t(1.0)).await, "triggers[1].calendars[1]");
    assert_eq!(h.all_jobs().await.len(), 1);
}
