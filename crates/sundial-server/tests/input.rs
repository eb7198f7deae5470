//! Hostile and careless input over real HTTP: the fuzzing findings of issue 14 and the input
//! limits of API.md round 2, each with the status, code and field path it must get.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn message(r: &Resp) -> &str {
    r.body["error"]["message"].as_str().unwrap_or("")
}

#[tokio::test]
async fn an_interval_below_min_interval_is_422_on_its_every() {
    let s = TestServer::start(|_| {}).await;
    for every in ["1ns", "1ms", "999ms"] {
        let body = json!({"handler": "echo", "triggers": [{"kind": "interval", "every": every}]});
        let r = s.post("/v1/jobs", body).await;
        assert_error(&r, 422, "invalid_value");
        assert!(message(&r).starts_with("triggers[0].every: "), "{}", r.body);
    }
    let ok = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1s"}]})).await;
    assert_eq!(ok.status, 201, "{}", ok.body);
    s.stop().await;

    // The floor is a flag.
    let s = TestServer::start(|c| c.job_limits.min_interval = Duration::from_secs(60)).await;
    let r = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "30s"}]})).await;
    assert_error(&r, 422, "invalid_value");
    s.stop().await;
}

#[tokio::test]
async fn times_outside_years_1_to_9999_utc_are_422_on_their_field() {
    let s = TestServer::start(|_| {}).await;
    let cases = [
        (json!({"kind": "once", "at": "9999-12-31T23:59:59-23:59"}), "triggers[0].at"),
        (json!({"kind": "cron", "expr": "0 0 * * *", "start_at": "0001-01-01T00:00:00+01:00"}), "triggers[0].start_at"),
        (json!({"kind": "interval", "every": "1h", "end_at": "9999-12-31T23:00:00-02:00"}), "triggers[0].end_at"),
    ];
    for (trigger, path) in cases {
        let r = s.post("/v1/jobs", json!({"handler": "echo", "triggers": [trigger]})).await;
        assert_error(&r, 422, "invalid_value");
        assert!(message(&r).starts_with(&format!("{path}: ")), "{path}: {}", r.body);
    }
    let r = s.get("/v1/runs?since=9999-12-31T23:59:59-01:00").await;
    assert_error(&r, 422, "invalid_value");
    assert!(message(&r).starts_with("since: "), "{}", r.body);
    // The last instant of 9999 in UTC is fine, and echoed as RFC 3339.
    let edge = s
        .post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "once", "at": "9999-12-31T23:59:59Z"}]}))
        .await;
    assert_eq!(edge.status, 201, "{}", edge.body);
    assert_eq!(edge.body["triggers"][0]["at"], "9999-12-31T23:59:59Z");
    s.stop().await;
}

#[tokio::test]
async fn an_unknown_field_is_named_once() {
    let s = TestServer::start(|_| {}).await;
    let r = s
        .post(
            "/v1/jobs",
            json!({"handler": "echo", "triggers": [{"kind": "once", "at": "2030-01-01T00:00:00Z", "bogus": 1}]}),
        )
        .await;
    assert_error(&r, 422, "invalid_value");
    assert!(message(&r).starts_with("triggers[0].bogus: unknown field"), "{}", r.body);
    assert!(!message(&r).contains("bogus.bogus"), "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn an_unsupported_method_is_405_with_the_error_body_on_every_route() {
    let s = TestServer::start(|_| {}).await;
    for (method, path) in [
        ("PUT", "/v1/jobs"),
        ("DELETE", "/v1/runs"),
        ("PUT", "/v1/jobs/x"),
        ("POST", "/healthz"),
        ("PATCH", "/v1/workers"),
    ] {
        let r = s.req(method, path, Some(json!({}))).await;
        assert_error(&r, 405, "method_not_allowed");
    }
    s.stop().await;
}

#[tokio::test]
async fn an_empty_patch_changes_nothing_and_keeps_updated_at() {
    let (clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    let j =
        s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1h"}]})).await.body;
    let id = j["id"].as_str().unwrap();
    clock.advance(Duration::from_secs(60));
    let r = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["updated_at"], j["updated_at"]);
    // The same values sent again are no change either.
    let same = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"priority": 0, "handler": "echo"}))).await;
    assert_eq!(same.body["updated_at"], j["updated_at"]);
    // A real change moves it (so the check above can fail).
    let changed = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"priority": 5}))).await;
    assert_ne!(changed.body["updated_at"], j["updated_at"], "{}", changed.body);
    s.stop().await;
}

#[tokio::test]
async fn payload_over_max_payload_is_413_alone_and_per_batch_item() {
    let s = TestServer::start(|c| c.job_limits.max_payload = 100).await;
    let big = json!({"handler": "echo", "payload": {"x": "a".repeat(200)}});
    assert_error(&s.post("/v1/jobs", big.clone()).await, 413, "payload_too_large");
    let ok = s.post("/v1/jobs", json!({"handler": "echo", "payload": {"x": "a".repeat(50)}})).await;
    assert_eq!(ok.status, 201);
    let r = s.post("/v1/jobs/batch", json!({"jobs": [big, {"handler": "echo"}]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["items"][0]["status"], 413);
    assert_eq!(r.body["items"][0]["error"]["code"], "payload_too_large");
    assert_eq!(r.body["items"][1]["status"], 201);
    s.stop().await;
}

#[tokio::test]
async fn at_most_100_triggers_and_catch_up_limit_at_most_1000() {
    let s = TestServer::start(|_| {}).await;
    let trigger = json!({"kind": "interval", "every": "1h"});
    let r = s.post("/v1/jobs", json!({"handler": "echo", "triggers": vec![trigger.clone(); 101]})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(message(&r).starts_with("triggers: "), "{}", r.body);
    let r = s.post("/v1/jobs", json!({"handler": "echo", "triggers": vec![trigger; 100]})).await;
    assert_eq!(r.status, 201);
    let catch_up = |n: u32| json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1h", "misfire": "catch_up", "catch_up_limit": n}]});
    let r = s.post("/v1/jobs", catch_up(1001)).await;
    assert_error(&r, 422, "invalid_value");
    assert!(message(&r).starts_with("triggers[0].catch_up_limit: "), "{}", r.body);
    assert_eq!(s.post("/v1/jobs", catch_up(1000)).await.status, 201);
    s.stop().await;
}

#[tokio::test]
async fn a_batch_over_10000_jobs_is_413_batch_too_large() {
    let s = TestServer::start(|_| {}).await;
    let jobs: Vec<Value> = (0..10_001).map(|_| json!({"handler": "e"})).collect();
    let r = s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_error(&r, 413, "batch_too_large");
    s.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after_but_health_is_not_limited() {
    let s = TestServer::start(|c| c.rate_limit = std::num::NonZeroU32::new(1)).await;
    // A burst of 1 passes; the next does not until a second has passed (two loopback requests
    // take milliseconds; the bucket's own arithmetic is unit-tested in limits.rs).
    let mut statuses = vec![];
    let mut retry_after = None;
    for _ in 0..2 {
        let r = s.http.get(format!("{}/v1/jobs", s.base)).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses, [200, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
    for open in ["/healthz", "/readyz", "/metrics", "/healthz", "/healthz"] {
        assert_eq!(s.http.get(format!("{}{open}", s.base)).send().await.unwrap().status(), 200, "{open}");
    }
    s.stop().await;
}
