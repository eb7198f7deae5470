//! Operating counts over real HTTP (API.md round 2, "Stats"): runs per bucket with the start lag,
//! handler queues, and the parameters' 422s.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn worker(s: &TestServer, handler: &str) -> String {
    let reg = s.post("/v1/workers", json!({"name": "w", "handlers": [handler], "capacity": 8})).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    reg.body["id"].as_str().unwrap().to_string()
}

fn items(body: &Value) -> &Vec<Value> {
    body["items"].as_array().expect("items")
}

#[tokio::test]
async fn stats_runs_are_dense_aligned_buckets_of_the_last_hour_by_default() {
    let (clock, shared) = manual_clock(); // 2026-11-24T08:00:00Z
    let s = TestServer::start(|c| c.clock = shared).await;
    let wid = worker(&s, "echo").await;
    let job = s.post("/v1/jobs", json!({"handler": "echo", "name": "tick"})).await;
    assert_eq!(job.status, 201, "{}", job.body);
    clock.advance(Duration::from_millis(10_250));
    let c = s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 1})).await;
    let run = c.body["runs"][0].clone();
    assert_eq!(run["handler"], "echo", "{}", c.body);
    let done = json!({"worker_id": wid, "attempt": run["attempt"], "state": "succeeded"});
    let r = s.post(&format!("/v1/runs/{}/complete", run["run_id"].as_str().unwrap()), done).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let r = s.get("/v1/stats/runs").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["next_cursor"], Value::Null);
    let buckets = items(&r.body);
    // From the minute holding 07:00:10.25 to the one holding now, 08:00:10.25.
    assert_eq!(buckets.len(), 61);
    assert_eq!(buckets[0]["t"], "2026-11-24T07:00:00Z");
    assert_eq!(buckets[60]["t"], "2026-11-24T08:00:00Z");
    let last = &buckets[60];
    assert_eq!((last["succeeded"].as_u64(), last["started"].as_u64()), (Some(1), Some(1)), "{last}");
    assert_eq!((last["lag_p50_ms"].as_u64(), last["lag_p99_ms"].as_u64()), (Some(10_250), Some(10_250)));
    let fields = ["succeeded", "failed", "timed_out", "cancelled", "skipped", "started", "lag_p50_ms", "lag_p99_ms"];
    for b in &buckets[..60] {
        for f in fields {
            assert!(b.get(f).is_some(), "{f} missing in {b}");
        }
        assert_eq!((b["started"].as_u64(), b["lag_p50_ms"].clone()), (Some(0), Value::Null), "{b}");
    }

    // An explicit window and step; the job by namespace/name.
    let q = "since=2026-11-24T07:59:00Z&until=2026-11-24T08:01:00Z&step=30s&job_id=default%2Ftick";
    let r = s.get(&format!("/v1/stats/runs?{q}")).await;
    let ts: Vec<&str> = items(&r.body).iter().map(|b| b["t"].as_str().unwrap()).collect();
    assert_eq!(ts, ["2026-11-24T07:59:00Z", "2026-11-24T07:59:30Z", "2026-11-24T08:00:00Z", "2026-11-24T08:00:30Z"]);
    assert_eq!(items(&r.body)[2]["succeeded"], 1);
    let r = s.get("/v1/stats/runs?job_id=default%2Fnone&since=2026-11-24T08:00:00Z").await;
    assert_eq!((r.status, items(&r.body)[0]["succeeded"].as_u64()), (200, Some(0)), "unknown job: nothing");
    let r = s.get("/v1/stats/runs?handler=other&since=2026-11-24T08:00:00Z").await;
    assert_eq!(items(&r.body)[0]["started"], 0);
    s.stop().await;
}

#[tokio::test]
async fn stats_runs_reject_bad_parameters_naming_them() {
    let (_clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    for (q, field) in [
        ("step=0s", "step"),
        ("step=soon", "step"),
        ("step=500ms", "step"),
        ("since=2026-11-23T07:59:59Z&step=1m", "step"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("since=2026-11-24T08:00:00Z&until=2026-11-24T08:00:00Z", "until"),
        ("since=2026-11-24T09:00:00Z", "until"),
    ] {
        let r = s.get(&format!("/v1/stats/runs?{q}")).await;
        assert_error(&r, 422, "invalid_value");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}:")), "{q}: {message}");
    }
    // A day of minutes is the most; one bucket more is not.
    let r = s.get("/v1/stats/runs?since=2026-11-23T08:00:00Z&until=2026-11-24T08:00:00Z").await;
    assert_eq!((r.status, items(&r.body).len()), (200, 1440));
    s.stop().await;
}

#[tokio::test]
async fn stats_handlers_show_queues_and_warn_of_handlers_nobody_serves() {
    let (_clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    worker(&s, "echo").await;
    for body in [
        json!({"handler": "lonely"}),
        json!({"handler": "lonely"}),
        json!({"handler": "lonely", "paused": true}),
        json!({"handler": "echo"}),
    ] {
        assert_eq!(s.post("/v1/jobs", body).await.status, 201);
    }
    let r = s.get("/v1/stats/handlers").await;
    assert_eq!((r.status, r.body["next_cursor"].clone()), (200, Value::Null), "{}", r.body);
    let find = |h: &str| items(&r.body).iter().find(|q| q["handler"] == h).cloned().unwrap_or_else(|| panic!("{h}"));
    let lonely = find("lonely");
    assert_eq!(
        lonely,
        json!({"handler": "lonely", "pending": 3, "due": 2, "running": 0,
               "oldest_due_at": "2026-11-24T08:00:00Z", "workers": 0})
    );
    let echo = find("echo");
    assert_eq!((echo["pending"].as_u64(), echo["due"].as_u64(), echo["workers"].as_u64()), (Some(1), Some(1), Some(1)));
    s.stop().await;
}

#[tokio::test]
async fn the_pending_gauge_counts_every_pending_run_per_handler() {
    let (_clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    let jobs: Vec<Value> = (0..3).map(|_| json!({"handler": "metered"})).collect();
    assert_eq!(s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await.status, 200);
    assert_eq!(s.post("/v1/jobs", json!({"handler": "metered", "paused": true})).await.status, 201);
    let text = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l == "sundial_runs_pending{handler=\"metered\"} 4"), "{text}");
    s.stop().await;
}
