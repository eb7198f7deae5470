//! Previews over real HTTP (API.md round 2, "Preview"), and the strict cron 422s they share with
//! job submission.

mod common;
use common::*;
use serde_json::{json, Value};

async fn server() -> TestServer {
    let (_, shared) = manual_clock(); // now = 2026-11-24T08:00:00Z; the scheduler never fires here
    TestServer::start(|c| c.clock = shared).await
}

/// `(trigger_id, at, local)` of each item.
fn rows(body: &Value) -> Vec<(Value, String, String)> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["trigger_id"].clone(), i["at"].as_str().unwrap().into(), i["local"].as_str().unwrap().into()))
        .collect()
}

#[tokio::test]
async fn job_fires_merge_triggers_in_time_order_within_windows_and_fires_left() {
    let s = server().await;
    let job = s
        .post(
            "/v1/jobs",
            json!({"handler": "echo", "triggers": [
                {"kind": "cron", "expr": "30 2 * * *", "timezone": "Europe/Berlin",
                 "start_at": "2027-03-26T00:00:00Z", "max_fires": 3},
                {"kind": "interval", "every": "12h",
                 "start_at": "2027-03-27T00:00:00Z", "end_at": "2027-03-28T00:00:00Z"},
            ]}),
        )
        .await;
    assert_eq!(job.status, 201, "{}", job.body);
    let id = job.body["id"].as_str().unwrap();
    let (a, b) = (job.body["triggers"][0]["id"].clone(), job.body["triggers"][1]["id"].clone());
    let r = s.get(&format!("/v1/jobs/{id}/fires?after=2027-03-25T00:00:00Z")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["next_cursor"], Value::Null);
    let row = |t: &Value, at: &str, local: &str| (t.clone(), at.to_string(), local.to_string());
    assert_eq!(
        rows(&r.body),
        [
            row(&a, "2027-03-26T01:30:00Z", "2027-03-26T02:30:00+01:00"),
            row(&b, "2027-03-27T00:00:00Z", "2027-03-27T00:00:00+00:00"),
            row(&a, "2027-03-27T01:30:00Z", "2027-03-27T02:30:00+01:00"),
            row(&b, "2027-03-27T12:00:00Z", "2027-03-27T12:00:00+00:00"),
            row(&b, "2027-03-28T00:00:00Z", "2027-03-28T00:00:00+00:00"),
            // 02:30 does not exist on 2027-03-28 in Berlin: the end of the gap; then max_fires.
            row(&a, "2027-03-28T01:00:00Z", "2027-03-28T03:00:00+02:00"),
        ]
    );
    // Strictly after `after`, and `limit` cuts the merged list.
    let r = s.get(&format!("/v1/jobs/{id}/fires?after=2027-03-27T00:00:00Z&limit=2")).await;
    assert_eq!(
        rows(&r.body),
        [
            row(&a, "2027-03-27T01:30:00Z", "2027-03-27T02:30:00+01:00"),
            row(&b, "2027-03-27T12:00:00Z", "2027-03-27T12:00:00+00:00"),
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn job_fires_default_to_ten_after_now_and_a_paused_job_previews_too() {
    let s = server().await;
    let job = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": "* * * * *"}]})).await;
    let id = job.body["id"].as_str().unwrap().to_string();
    let r = s.get(&format!("/v1/jobs/{id}/fires")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ats: Vec<String> = rows(&r.body).into_iter().map(|(_, at, _)| at).collect();
    let expected: Vec<String> = (1..=10).map(|m| format!("2026-11-24T08:{m:02}:00Z")).collect();
    assert_eq!(ats, expected);
    assert_eq!(s.post(&format!("/v1/jobs/{id}/pause"), json!({})).await.status, 200);
    let paused = s.get(&format!("/v1/jobs/{id}/fires?limit=3")).await;
    assert_eq!(paused.body["items"].as_array().unwrap().len(), 3, "{}", paused.body);
    s.stop().await;
}

#[tokio::test]
async fn job_fires_refuse_a_bad_limit_or_after_and_an_unknown_job() {
    let s = server().await;
    let job = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1h"}]})).await;
    let id = job.body["id"].as_str().unwrap();
    for q in ["limit=1001", "limit=0", "limit=ten", "after=yesterday"] {
        let r = s.get(&format!("/v1/jobs/{id}/fires?{q}")).await;
        assert_error(&r, 422, "invalid_value");
        let field = q.split('=').next().unwrap();
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with(&format!("{field}: ")), "{}", r.body);
    }
    assert_eq!(s.get(&format!("/v1/jobs/{id}/fires?limit=1000")).await.status, 200);
    assert_error(&s.get("/v1/jobs/no-such-job/fires").await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn trigger_preview_answers_for_an_unsaved_trigger_with_null_ids() {
    let s = server().await;
    let r = s
        .post(
            "/v1/triggers/preview",
            json!({"trigger": {"kind": "cron", "expr": "0 0 1W * *"}, "after": "2026-07-15T00:00:00Z", "limit": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["next_cursor"], Value::Null);
    assert_eq!(
        rows(&r.body),
        [
            // 2026-08-01 is a Saturday: Monday the 3rd, not Friday July 31.
            (Value::Null, "2026-08-03T00:00:00Z".into(), "2026-08-03T00:00:00+00:00".into()),
            (Value::Null, "2026-09-01T00:00:00Z".into(), "2026-09-01T00:00:00+00:00".into()),
        ]
    );
    // Default `after` is now (the manual clock) and default limit 10.
    let r = s.post("/v1/triggers/preview", json!({"trigger": {"kind": "interval", "every": "1h"}})).await;
    let ats: Vec<String> = rows(&r.body).into_iter().map(|(_, at, _)| at).collect();
    assert_eq!(ats.len(), 10);
    assert_eq!(ats[0], "2026-11-24T09:00:00Z");
    s.stop().await;
}

#[tokio::test]
async fn trigger_preview_errors_are_under_trigger() {
    let s = server().await;
    let cases = [
        (
            json!({"trigger": {"kind": "cron", "expr": "61 * * * *"}}),
            "trigger.expr: minute field: 61 is out of range 0-59",
        ),
        (json!({"trigger": {"kind": "cron", "expr": "* * * * *", "timezone": "Mars/Base"}}), "trigger.timezone: "),
        (json!({"trigger": {"kind": "weekly"}}), "trigger.kind: "),
        (json!({"trigger": {"kind": "interval"}}), "trigger.every: "),
        (json!({"trigger": {"kind": "interval", "every": "1h"}, "limit": 1001}), "limit: "),
        (json!({}), "trigger: is required"),
    ];
    for (body, prefix) in cases {
        let r = s.post("/v1/triggers/preview", body.clone()).await;
        assert_error(&r, 422, "invalid_value");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(prefix), "{msg:?} should start with {prefix:?} for {body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn strict_cron_is_422_on_the_expr_path_naming_field_and_value() {
    let s = server().await;
    let cases = [
        ("61 * * * *", "triggers[0].expr: minute field: 61 is out of range 0-59"),
        ("0 0 * MON *", "triggers[0].expr: month field: \"MON\" is a day-of-week name"),
        ("0 0 * * JAN", "triggers[0].expr: day-of-week field: \"JAN\" is a month name"),
        ("1,,2 * * * *", "triggers[0].expr: minute field: empty list item in \"1,,2\""),
        ("1, * * * *", "triggers[0].expr: minute field: empty list item in \"1,\""),
        ("? * * * *", "triggers[0].expr: minute field: \"?\""),
    ];
    for (expr, prefix) in cases {
        let r = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": expr}]})).await;
        assert_error(&r, 422, "invalid_value");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(prefix), "{msg:?} should start with {prefix:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn openapi_declares_the_preview_routes_with_their_parameters() {
    let s = server().await;
    let doc = s.get("/openapi.json").await.body;
    let fires = &doc["paths"]["/v1/jobs/{id}/fires"]["get"];
    assert_eq!(fires["operationId"], "job_fires");
    let params: Vec<(&str, &str)> = fires["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["in"].as_str().unwrap()))
        .collect();
    assert_eq!(params, [("id", "path"), ("after", "query"), ("limit", "query")]);
    assert_eq!(doc["paths"]["/v1/triggers/preview"]["post"]["operationId"], "trigger_preview");
    s.stop().await;
}
