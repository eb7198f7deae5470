//! Time-dependent behaviour of a whole node, driven by an injected manual clock: misfires,
//! lease expiry and fencing, worker death. No wall-clock sleeps decide an outcome; waits are
//! bounded polls for the node's background loops to catch up with the clock.

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn register(s: &TestServer, name: &str) -> String {
    s.post("/v1/workers", json!({"name": name, "handlers": ["echo"], "capacity": 4})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn misfire_skip_after_downtime_records_one_skipped_run_counting_the_missed_times() {
    let (clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    let j = s
        .post(
            "/v1/jobs",
            json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1m", "misfire": "skip"}]}),
        )
        .await
        .body;
    let id = j["id"].as_str().unwrap().to_string();
    // The scheduler is "down" for ten minutes: it wakes only when the clock jumps past them.
    clock.advance(Duration::from_secs(10 * 60 + 30));
    let runs =
        s.wait_for(&format!("/v1/runs?job_id={id}"), "the fires", |b| b["items"].as_array().unwrap().len() >= 2).await;
    let items = runs["items"].as_array().unwrap();
    // 08:01..08:09 are more than the 60 s threshold late: one skipped run at the latest of
    // them, counting all nine. 08:10 is 30 s late, inside the threshold: it fires normally.
    assert_eq!(items.len(), 2, "{runs}");
    assert_eq!(items[1]["state"], "skipped");
    assert_eq!(items[1]["scheduled_for"], "2026-11-24T08:09:00Z");
    let reason = items[1]["reason"].as_str().unwrap();
    assert!(reason.contains("skipped 9 missed"), "reason counts the 9 missed times: {reason}");
    assert_eq!(items[0]["state"], "pending");
    assert_eq!(items[0]["scheduled_for"], "2026-11-24T08:10:00Z");
    let job = s.get(&format!("/v1/jobs/{id}")).await.body;
    assert_eq!(job["triggers"][0]["fires"], 10);
    s.stop().await;
}

#[tokio::test]
async fn fencing_a_late_complete_from_a_lost_worker_is_409_and_the_result_is_the_new_holders() {
    let (clock, shared) = manual_clock();
    let s = TestServer::start(|c| {
        c.clock = shared;
        c.lease = Duration::from_secs(30);
    })
    .await;
    let a = register(&s, "a").await;
    let b = register(&s, "b").await;
    s.post("/v1/jobs", json!({"handler": "echo"})).await;
    let claim = s.post(&format!("/v1/workers/{a}/claim"), json!({"max": 1})).await.body;
    let run_id = claim["runs"][0]["run_id"].as_str().unwrap().to_string();
    assert_eq!(claim["runs"][0]["attempt"], 1);
    // A goes silent; its lease runs out and the reaper puts the run back for attempt 2.
    clock.advance(Duration::from_secs(31));
    s.wait_for(&format!("/v1/runs/{run_id}"), "lease expiry to be reaped", |r| r["state"] == "pending").await;
    // Retry backoff (1s + jitter) must pass before it is claimable again.
    clock.advance(Duration::from_secs(2));
    let claim_b = s.post(&format!("/v1/workers/{b}/claim"), json!({"max": 1, "wait": "2s"})).await.body;
    assert_eq!(claim_b["runs"][0]["run_id"], run_id.as_str(), "{claim_b}");
    assert_eq!(claim_b["runs"][0]["attempt"], 2);
    let late = s
        .post(
            &format!("/v1/runs/{run_id}/complete"),
            json!({"worker_id": a, "attempt": 1, "state": "succeeded", "output": {"by": "a"}}),
        )
        .await;
    assert_error(&late, 409, "stale_attempt");
    let ok = s
        .post(
            &format!("/v1/runs/{run_id}/complete"),
            json!({"worker_id": b, "attempt": 2, "state": "succeeded", "output": {"by": "b"}}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let run = s.get(&format!("/v1/runs/{run_id}")).await.body;
    assert_eq!(run["output"], json!({"by": "b"}));
    assert_eq!(run["worker_id"], b.as_str());
    assert_eq!(run["attempt"], 2);
    s.stop().await;
}

#[tokio::test]
async fn silent_worker_is_dead_after_twice_the_lease_and_a_heartbeat_revives_it_with_its_runs_lost() {
    let (clock, shared) = manual_clock();
    let s = TestServer::start(|c| {
        c.clock = shared;
        c.lease = Duration::from_secs(30);
    })
    .await;
    let w = register(&s, "w").await;
    s.post("/v1/jobs", json!({"handler": "echo"})).await;
    let run_id = s.post(&format!("/v1/workers/{w}/claim"), json!({"max": 1})).await.body["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(Duration::from_secs(61));
    s.wait_for("/v1/workers", "worker to be dead", |b| b["items"][0]["state"] == "dead").await;
    let hb = s.post(&format!("/v1/workers/{w}/heartbeat"), json!({"runs": [{"run_id": run_id, "attempt": 1}]})).await;
    assert_eq!(hb.status, 200);
    assert_eq!(hb.body["lost"], json!([run_id]));
    let workers = s.get("/v1/workers").await.body;
    assert_eq!(workers["items"][0]["state"], "active");
    s.stop().await;
}

#[tokio::test]
async fn cancel_of_a_running_run_is_told_at_the_next_heartbeat_and_ends_cancelled() {
    let s = TestServer::with_workers(0).await;
    let w = register(&s, "w").await;
    s.post("/v1/jobs", json!({"handler": "echo"})).await;
    let run_id = s.post(&format!("/v1/workers/{w}/claim"), json!({"max": 1})).await.body["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = s.post(&format!("/v1/runs/{run_id}/cancel"), json!({})).await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["state"], "running");
    assert_eq!(c.body["cancel_requested"], true);
    let hb =
        s.post(&format!("/v1/workers/{w}/heartbeat"), json!({"runs": [{"run_id": run_id, "attempt": 1}]})).await.body;
    assert_eq!(hb["cancel"], json!([run_id]));
    let done = s
        .post(&format!("/v1/runs/{run_id}/complete"), json!({"worker_id": w, "attempt": 1, "state": "cancelled"}))
        .await;
    assert_eq!(done.body["state"], "cancelled");
    s.stop().await;
}

#[tokio::test]
async fn paused_job_created_without_triggers_holds_its_run_until_resume() {
    let s = TestServer::with_workers(1).await;
    let j = s.post("/v1/jobs", json!({"handler": "echo", "paused": true})).await.body;
    let id = j["id"].as_str().unwrap().to_string();
    s.claim_passed_over_pending_runs().await;
    let runs = s.get(&format!("/v1/runs?job_id={id}")).await.body;
    assert_eq!(runs["items"][0]["state"], "pending", "held while paused: {runs}");
    s.post(&format!("/v1/jobs/{id}/resume"), json!({})).await;
    s.wait_for(&format!("/v1/runs?job_id={id}"), "run after resume", |b: &Value| b["items"][0]["state"] == "succeeded")
        .await;
    s.stop().await;
}

#[tokio::test]
async fn timed_out_run_is_retried_then_ends_timed_out() {
    let s = TestServer::start(|c| {
        c.workers = 1;
        c.enable_shell = true;
    })
    .await;
    let j = s
        .post(
            "/v1/jobs",
            json!({"handler": "shell", "payload": {"command": "sleep 30"}, "timeout": "300ms",
                   "retry": {"max_attempts": 2, "initial_delay": "10ms", "max_delay": "10ms"}}),
        )
        .await
        .body;
    let id = j["id"].as_str().unwrap();
    let runs =
        s.wait_for(&format!("/v1/runs?job_id={id}"), "timed_out", |b| b["items"][0]["state"] == "timed_out").await;
    assert_eq!(runs["items"][0]["attempt"], 2, "one retry, then the last attempt ends timed_out");
    s.stop().await;
}
