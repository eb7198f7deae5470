//! Flow control over HTTP: `/v1/limits` shapes and errors, held runs' reasons, limits on jobs
//! and runs, and the fairness bar of API.md (a real node with 4 in-process worker slots).

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::HashSet;

async fn put(s: &TestServer, key: &str, body: Value) -> Resp {
    s.req("PUT", &format!("/v1/limits/{key}"), Some(body)).await
}

#[tokio::test]
async fn put_get_list_delete_answer_the_documented_shapes() {
    let s = TestServer::start(|_| {}).await;
    let r = put(&s, "tenant:*", json!({"max_running": 2, "rate": {"count": 100, "per": "1m"}})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["key"], "tenant:*");
    assert_eq!(b["pattern"], Value::Null);
    assert_eq!(b["max_running"], 2);
    assert_eq!(b["rate"], json!({"count": 100, "per": "1m"}));
    assert_eq!(b["running"], Value::Null, "a pattern itself has no running count");
    assert!(b["created_at"].is_string() && b["updated_at"].is_string());

    let r = put(&s, "smtp", json!({"max_running": null, "rate": {"count": 5, "per": "10s"}})).await;
    assert_eq!((r.status, r.body["max_running"].clone(), r.body["running"].clone()), (200, Value::Null, json!(0)));

    // A concrete key only a pattern governs.
    let r = s.get("/v1/limits/tenant:42").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["key"].clone(), r.body["pattern"].clone()), (json!("tenant:42"), json!("tenant:*")));
    assert_eq!((r.body["max_running"].clone(), r.body["running"].clone()), (json!(2), json!(0)));

    // `/` in a key travels as %2F.
    let r = put(&s, "eu%2Fsmtp", json!({"max_running": 1})).await;
    assert_eq!((r.status, r.body["key"].clone()), (200, json!("eu/smtp")));
    assert_eq!(s.get("/v1/limits/eu%2Fsmtp").await.body["max_running"], 1);

    let list = s.get("/v1/limits").await;
    assert_eq!(list.status, 200);
    let keys: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, vec!["eu/smtp", "smtp", "tenant:*"]);
    assert_eq!(list.body["next_cursor"], Value::Null);

    assert_eq!(s.req("DELETE", "/v1/limits/smtp", None).await.status, 204);
    assert_error(&s.get("/v1/limits/smtp").await, 404, "not_found");
    assert_error(&s.req("DELETE", "/v1/limits/smtp", None).await, 404, "not_found");
    assert_error(&s.get("/v1/limits/other").await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn bad_limits_are_422_naming_the_field() {
    let s = TestServer::start(|_| {}).await;
    let r = put(&s, "a", json!({})).await;
    assert_error(&r, 422, "invalid_value");
    let r = put(&s, "a", json!({"max_running": null, "rate": null})).await;
    assert_error(&r, 422, "invalid_value");
    let r = put(&s, "te*nant", json!({"max_running": 1})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("key:"), "{}", r.body);
    let r = put(&s, "a", json!({"max_running": 0})).await;
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("max_running:"), "{}", r.body);
    let r = put(&s, "a", json!({"rate": {"count": 1, "per": "soon"}})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("rate.per:"), "{}", r.body);
    let r = s.req("PUT", "/v1/limits/a", None).await;
    assert_error(&r, 422, "invalid_value");
    let long = "k".repeat(201);
    assert_error(&put(&s, &long, json!({"max_running": 1})).await, 422, "invalid_value");

    // Jobs: keys are concrete, at most 8, each path named.
    let r = s.post("/v1/jobs", json!({"handler": "echo", "limits": ["ok", "tenant:*"]})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("limits[1]:"), "{}", r.body);
    let nine: Vec<String> = (0..9).map(|i| format!("k{i}")).collect();
    let r = s.post("/v1/jobs", json!({"handler": "echo", "limits": nine})).await;
    assert!(r.body["error"]["message"].as_str().unwrap().starts_with("limits:"), "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn a_held_run_says_which_limit_holds_it_and_jobs_and_runs_carry_limits() {
    let s = TestServer::start(|_| {}).await;
    assert_eq!(put(&s, "tenant:*", json!({"max_running": 1})).await.status, 200);
    let w = s.post("/v1/workers", json!({"name": "w", "handlers": ["echo"], "capacity": 4})).await.body;
    let w = w["id"].as_str().unwrap().to_string();
    let j = s.post("/v1/jobs", json!({"handler": "echo", "limits": ["tenant:7", "smtp"]})).await.body;
    assert_eq!(j["limits"], json!(["tenant:7", "smtp"]));
    let plain = s.post("/v1/jobs", json!({"handler": "echo"})).await.body;
    assert_eq!(plain["limits"], json!([]));
    let id = j["id"].as_str().unwrap();
    s.post(&format!("/v1/jobs/{id}/run"), json!({})).await;
    let claim = s.post(&format!("/v1/workers/{w}/claim"), json!({"max": 8, "wait": "0s"})).await.body;
    assert_eq!(claim["runs"].as_array().unwrap().len(), 2, "one run of tenant:7 and the plain one: {claim}");
    let runs = s.get(&format!("/v1/runs?job_id={id}&state=pending")).await.body;
    let held = &runs["items"][0];
    assert_eq!(held["reason"], "waiting for limit tenant:7");
    assert_eq!(held["limits"], json!(["tenant:7", "smtp"]));
    assert_eq!(s.get("/v1/limits/tenant:7").await.body["running"], 1);
    let listed = s.get("/v1/limits").await.body;
    assert_eq!(listed["items"][0]["running"], Value::Null);
    s.stop().await;
}

/// API.md's bar: with 4 in-process worker slots and thousands of key A's runs due and waiting,
/// 20 runs of key B submitted then all start before 500 more of A's runs have started. Start
/// times are the store's `started_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backlog_of_one_key_does_not_hold_back_another_keys_runs() {
    let s = TestServer::with_workers(4).await;
    let a: Vec<Value> = (0..5000).map(|_| json!({"handler": "echo", "limits": ["A"]})).collect();
    let r = s.post("/v1/jobs/batch", json!({"jobs": a})).await;
    assert_eq!(r.status, 200);
    let b: Vec<Value> = (0..20).map(|_| json!({"handler": "echo", "limits": ["B"]})).collect();
    let r = s.post("/v1/jobs/batch", json!({"jobs": b})).await;
    let b_jobs: HashSet<String> =
        r.body["items"].as_array().unwrap().iter().map(|i| i["job"]["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(b_jobs.len(), 20);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    let runs = loop {
        let runs = all_runs(&s).await;
        let b_done =
            runs.iter().filter(|r| b_jobs.contains(r["job_id"].as_str().unwrap()) && r["state"] == "succeeded").count();
        if b_done == 20 {
            break runs;
        }
        assert!(tokio::time::Instant::now() < deadline, "B's runs did not all finish");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let t = |r: &Value, f: &str| r[f].as_str().map(|s| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    let (bs, as_): (Vec<&Value>, Vec<&Value>) =
        runs.iter().partition(|r| b_jobs.contains(r["job_id"].as_str().unwrap()));
    let b_submitted = bs.iter().filter_map(|r| t(r, "created_at")).min().unwrap();
    let b_last_start = bs.iter().filter_map(|r| t(r, "started_at")).max().unwrap();
    let a_waiting = as_.iter().filter(|r| t(r, "started_at").is_none_or(|s| s > b_submitted)).count();
    assert!(a_waiting >= 1000, "the bar needs thousands of A's runs waiting when B arrives; only {a_waiting} were");
    let a_between =
        as_.iter().filter(|r| t(r, "started_at").is_some_and(|s| s > b_submitted && s <= b_last_start)).count();
    assert!(a_between < 500, "{a_between} of A's runs started between B's submission and B's last start");
    s.stop().await;
}

async fn all_runs(s: &TestServer) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs?limit=1000&cursor={c}"),
            None => "/v1/runs?limit=1000".to_string(),
        };
        let body = s.get(&path).await.body;
        out.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}
