//! Calendars and backfills over real HTTP (API.md "Schedules you can audit": "Calendars",
//! "Backfill"): the objects field by field, triggers naming them, previews honouring them, and
//! backfill's answers and 422s.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A server at 2026-11-24T08:00:00Z (a Tuesday) whose scheduler never fires on its own.
async fn server() -> (std::sync::Arc<sundial_core::clock::ManualClock>, TestServer) {
    let (clock, shared) = manual_clock();
    (clock, TestServer::start(|c| c.clock = shared).await)
}

fn message(r: &Resp) -> String {
    r.body["error"]["message"].as_str().unwrap_or_default().to_string()
}

fn ats(body: &Value) -> Vec<String> {
    body["items"].as_array().unwrap().iter().map(|i| i["at"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn calendars_are_stored_echoed_listed_and_deleted() {
    let (clock, s) = server().await;
    let exclude = json!([{"date": "2026-12-25"}, {"from": "2026-12-24T12:00:00", "until": "2026-12-27T00:00:00"},
        {"cron": "* * * * SAT,SUN"}]);
    let r =
        s.req("PUT", "/v1/calendars/holidays", Some(json!({"timezone": "Europe/Berlin", "exclude": exclude}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "holidays");
    assert_eq!(r.body["timezone"], "Europe/Berlin");
    assert_eq!(r.body["exclude"], exclude, "echoed as sent");
    assert_eq!(r.body["created_at"], "2026-11-24T08:00:00Z");
    assert_eq!(r.body["updated_at"], "2026-11-24T08:00:00Z");
    clock.advance(Duration::from_secs(60));
    let replaced = s.req("PUT", "/v1/calendars/holidays", Some(json!({"exclude": []}))).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(replaced.body["timezone"], "UTC", "default zone");
    assert_eq!(replaced.body["created_at"], "2026-11-24T08:00:00Z", "a replace keeps created_at");
    assert_eq!(replaced.body["updated_at"], "2026-11-24T08:01:00Z");
    let list = s.get("/v1/calendars").await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["next_cursor"], Value::Null);
    assert_eq!(list.body["items"], json!([replaced.body.clone()]));
    assert_eq!(s.get("/v1/calendars/holidays").await.body, replaced.body);
    assert_error(&s.get("/v1/calendars/nope").await, 404, "not_found");
    let bad = s.req("PUT", "/v1/calendars/c", Some(json!({"exclude": [{"date": "25.12.2026"}]}))).await;
    assert_error(&bad, 422, "invalid_value");
    assert!(message(&bad).starts_with("exclude[0].date: "), "{}", bad.body);
    let bad = s.req("PUT", "/v1/calendars/c", Some(json!({"timezone": "Mars/Base"}))).await;
    assert!(message(&bad).starts_with("timezone: "), "{}", bad.body);
    assert_error(&s.req("PUT", "/v1/calendars/a%20b", Some(json!({}))).await, 422, "invalid_value");
    assert_eq!(s.req("DELETE", "/v1/calendars/holidays", None).await.status, 204);
    assert_error(&s.req("DELETE", "/v1/calendars/holidays", None).await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn triggers_name_calendars_and_previews_honour_them() {
    let (_, s) = server().await;
    let weekend = json!({"exclude": [{"cron": "* * * * SAT,SUN"}]});
    assert_eq!(s.req("PUT", "/v1/calendars/weekend", Some(weekend)).await.status, 200);
    let plain = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1h"}]})).await;
    assert_eq!(plain.body["triggers"][0]["calendars"], json!([]), "always present");
    let unknown = json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": "0 9 * * *", "calendars": ["weekend", "nope"]}]});
    let r = s.post("/v1/jobs", unknown.clone()).await;
    assert_error(&r, 422, "invalid_value");
    assert!(message(&r).starts_with("triggers[0].calendars[1]: "), "{}", r.body);
    let batch = s.post("/v1/jobs/batch", json!({"jobs": [unknown]})).await;
    assert_eq!(batch.body["items"][0]["status"], 422, "{}", batch.body);
    let daily = json!({"kind": "cron", "expr": "0 9 * * *", "calendars": ["weekend"]});
    let job = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [daily.clone()]})).await;
    assert_eq!(job.status, 201, "{}", job.body);
    assert_eq!(job.body["triggers"][0]["calendars"], json!(["weekend"]));
    let id = job.body["id"].as_str().unwrap();
    // Tue 24 … Fri 27, then Monday 30: the weekend is not fires.
    let days = ["24", "25", "26", "27", "30"].map(|d| format!("2026-11-{d}T09:00:00Z"));
    assert_eq!(ats(&s.get(&format!("/v1/jobs/{id}/fires?limit=5")).await.body), days);
    let preview = s.post("/v1/triggers/preview", json!({"trigger": daily, "limit": 5})).await;
    assert_eq!(ats(&preview.body), days, "{}", preview.body);
    let r = s
        .post("/v1/triggers/preview", json!({"trigger": {"kind": "cron", "expr": "0 9 * * *", "calendars": ["nope"]}}))
        .await;
    assert!(message(&r).starts_with("trigger.calendars[0]: "), "{}", r.body);
    assert_error(&s.req("DELETE", "/v1/calendars/weekend", None).await, 409, "calendar_in_use");
    assert_eq!(s.req("DELETE", &format!("/v1/jobs/{id}"), None).await.status, 204);
    assert_eq!(s.req("DELETE", "/v1/calendars/weekend", None).await.status, 204);
    s.stop().await;
}

#[tokio::test]
async fn backfill_answers_created_and_existing_and_refuses_bad_input() {
    let (_, s) = server().await;
    let job = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": "0 * * * *"}]})).await;
    let id = job.body["id"].as_str().unwrap().to_string();
    let path = format!("/v1/jobs/{id}/backfill");
    let range = json!({"from": "2026-11-24T05:00:00Z", "until": "2026-11-24T08:00:00Z"});
    let r = s.post(&path, range.clone()).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"created": 3, "existing": 0})));
    let r = s.post(&path, range).await;
    assert_eq!(r.body, json!({"created": 0, "existing": 3}), "once per due time");
    let runs = s.get(&format!("/v1/runs?job_id={id}")).await;
    let items = runs.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for run in items {
        assert_eq!(
            (run["reason"].as_str(), run["scheduled_for"].as_str()),
            (Some("backfill"), Some("2026-11-24T08:00:00Z"))
        );
    }
    let after = s.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(after.body["triggers"], job.body["triggers"], "fires and next_fire_at unchanged");
    let future = s.post(&path, json!({"from": "2026-11-24T05:00:00Z", "until": "2026-11-24T09:00:00Z"})).await;
    assert_error(&future, 422, "invalid_value");
    assert!(message(&future).starts_with("until: "), "{}", future.body);
    let empty = s.post(&path, json!({"from": "2026-11-24T05:00:00Z", "until": "2026-11-24T05:00:00Z"})).await;
    assert!(message(&empty).starts_with("until: "), "{}", empty.body);
    let too_many = s.post(&path, json!({"from": "2025-01-01T00:00:00Z", "until": "2026-11-24T00:00:00Z"})).await;
    assert!(message(&too_many).starts_with("until: "), "{}", too_many.body);
    let foreign = s
        .post(&path, json!({"from": "2026-11-24T05:00:00Z", "until": "2026-11-24T08:00:00Z", "trigger_id": "x"}))
        .await;
    assert!(message(&foreign).starts_with("trigger_id: "), "{}", foreign.body);
    let r = s
        .post("/v1/jobs/nope/backfill", json!({"from": "2026-11-24T05:00:00Z", "until": "2026-11-24T08:00:00Z"}))
        .await;
    assert_error(&r, 404, "not_found");
    s.stop().await;
}
