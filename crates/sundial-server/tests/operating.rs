//! Operating runs over real HTTP (API.md round 2): retry, attempt history, bulk cancel/retry by
//! filter, and jobs addressed by `namespace/name`.

mod common;
use common::*;
use serde_json::{json, Value};

async fn worker(s: &TestServer, name: &str, handler: &str) -> String {
    let reg = s.post("/v1/workers", json!({"name": name, "handlers": [handler], "capacity": 8})).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    reg.body["id"].as_str().unwrap().to_string()
}

async fn claim_one(s: &TestServer, wid: &str) -> Value {
    let c = s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 1, "wait": "1s"})).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["runs"].as_array().map(Vec::len), Some(1), "{}", c.body);
    c.body["runs"][0].clone()
}

async fn complete(s: &TestServer, wid: &str, run: &Value, state: &str, error: Option<&str>) -> Value {
    let id = run["run_id"].as_str().unwrap();
    let body = json!({"worker_id": wid, "attempt": run["attempt"], "state": state, "error": error});
    let r = s.post(&format!("/v1/runs/{id}/complete"), body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

#[tokio::test]
async fn retry_puts_a_failed_run_back_and_attempts_list_every_attempt_with_its_error_and_worker() {
    let s = TestServer::with_workers(0).await;
    let job = s.post("/v1/jobs", json!({"handler": "flaky", "retry": {"max_attempts": 1}})).await.body;
    let alpha = worker(&s, "alpha", "flaky").await;
    let c1 = claim_one(&s, &alpha).await;
    let run_id = c1["run_id"].as_str().unwrap().to_string();
    assert_error(&s.raw("POST", &format!("/v1/runs/{run_id}/retry"), None).await, 409, "not_retryable");
    let failed = complete(&s, &alpha, &c1, "failed", Some("boom")).await;
    assert_eq!((failed["state"].as_str(), failed["worker_name"].as_str()), (Some("failed"), Some("alpha")));

    let r = s.raw("POST", &format!("/v1/runs/{run_id}/retry"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["state"].as_str(), r.body["attempt"].as_u64(), r.body["max_attempts"].as_u64()),
        (Some("pending"), Some(1), Some(2))
    );
    let reason = r.body["reason"].as_str().unwrap();
    assert_eq!(reason, format!("{}; retried by operator", failed["reason"].as_str().unwrap()));
    assert!(r.body["finished_at"].is_null());
    assert_error(&s.raw("POST", &format!("/v1/runs/{run_id}/retry"), None).await, 409, "not_retryable");
    assert_error(&s.raw("POST", "/v1/runs/no-such-run/retry", None).await, 404, "not_found");

    let beta = worker(&s, "beta", "flaky").await;
    let c2 = claim_one(&s, &beta).await;
    assert_eq!((c2["run_id"].as_str(), c2["attempt"].as_u64()), (Some(run_id.as_str()), Some(2)));
    let done = complete(&s, &beta, &c2, "succeeded", None).await;
    assert_eq!(done["worker_name"], "beta");

    let a = s.get(&format!("/v1/runs/{run_id}/attempts")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["next_cursor"].is_null(), "{}", a.body);
    let items = a.body["items"].as_array().unwrap();
    let keys: Vec<&str> = items[0].as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, ["attempt", "error", "finished_at", "started_at", "state", "worker_id", "worker_name"]);
    let got: Vec<(u64, &str, &str, &str, Value)> = items
        .iter()
        .map(|i| {
            (
                i["attempt"].as_u64().unwrap(),
                i["worker_id"].as_str().unwrap(),
                i["worker_name"].as_str().unwrap(),
                i["state"].as_str().unwrap(),
                i["error"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(1, alpha.as_str(), "alpha", "failed", json!("boom")), (2, beta.as_str(), "beta", "succeeded", Value::Null)]
    );
    assert!(items.iter().all(|i| i["started_at"].is_string() && i["finished_at"].is_string()));
    assert_error(&s.get("/v1/runs/no-such-run/attempts").await, 404, "not_found");
    let job_id = job["id"].as_str().unwrap();
    let never = s.post(&format!("/v1/jobs/{job_id}/run"), json!({})).await.body;
    let a = s.get(&format!("/v1/runs/{}/attempts", never["id"].as_str().unwrap())).await;
    assert_eq!(a.body, json!({"items": [], "next_cursor": null}), "never claimed");
    s.stop().await;
}

#[tokio::test]
async fn bulk_acts_on_every_match_beyond_one_page_and_counts_matched_and_changed() {
    let s = TestServer::with_workers(0).await;
    // More runs than one page of the bulk's reads (1,000), plus one of another handler.
    let jobs: Vec<Value> = (0..1001).map(|_| json!({"handler": "bulky"})).collect();
    let b = s.post("/v1/jobs/batch", json!({ "jobs": jobs })).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let other = s.post("/v1/jobs", json!({"handler": "other"})).await.body;

    let cancel = json!({"action": "cancel", "filter": {"handler": "bulky"}});
    let r = s.post("/v1/runs/bulk", cancel.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"matched": 1001, "changed": 1001}));
    let left = s.get("/v1/runs?handler=bulky&state=pending").await;
    assert_eq!(left.body["items"], json!([]), "every match was cancelled");
    let untouched = s.get(&format!("/v1/runs?job_id={}", other["id"].as_str().unwrap())).await;
    assert_eq!(untouched.body["items"][0]["state"], "pending", "another handler's run is not touched");
    assert_eq!(s.post("/v1/runs/bulk", cancel).await.body, json!({"matched": 1001, "changed": 0}));

    let retry = json!({"action": "retry", "filter": {"handler": "bulky", "state": "cancelled"}});
    assert_eq!(s.post("/v1/runs/bulk", retry).await.body, json!({"matched": 1001, "changed": 1001}));
    let one = s.get("/v1/runs?handler=bulky&limit=1").await.body["items"][0].clone();
    assert_eq!(one["state"], "pending");
    assert!(one["reason"].as_str().unwrap().ends_with("; retried by operator"), "{one}");

    let all = json!({"action": "cancel", "filter": {"all": true}});
    assert_eq!(s.post("/v1/runs/bulk", all).await.body, json!({"matched": 1002, "changed": 1002}));

    for empty in [json!({"action": "cancel", "filter": {}}), json!({"action": "retry", "filter": {"all": false}})] {
        let r = s.post("/v1/runs/bulk", empty).await;
        assert_error(&r, 422, "invalid_value");
        assert!(r.body["error"]["message"].as_str().unwrap().starts_with("filter"), "{}", r.body);
    }
    let r = s.post("/v1/runs/bulk", json!({"action": "delete", "filter": {"all": true}})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("action"), "{}", r.body);
    let r = s.post("/v1/runs/bulk", json!({"action": "cancel", "filter": {"state": "nope"}})).await;
    assert_error(&r, 422, "invalid_value");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("filter.state"), "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn every_job_route_takes_namespace_slash_name() {
    let s = TestServer::with_workers(0).await;
    let job = s
        .post(
            "/v1/jobs",
            json!({"name": "nightly", "namespace": "ops", "handler": "h",
            "triggers": [{"kind": "interval", "every": "1h"}]}),
        )
        .await
        .body;
    let id = job["id"].as_str().unwrap();
    let by_name = "/v1/jobs/ops%2Fnightly";
    assert_eq!(s.get(by_name).await.body["id"], id);
    let paused = s.raw("POST", &format!("{by_name}/pause"), None).await;
    assert_eq!((paused.status, paused.body["paused"].as_bool()), (200, Some(true)));
    let resumed = s.raw("POST", &format!("{by_name}/resume"), None).await;
    assert_eq!((resumed.status, resumed.body["paused"].as_bool()), (200, Some(false)));
    let patched = s.req("PATCH", by_name, Some(json!({"priority": 7}))).await;
    assert_eq!(
        (patched.status, patched.body["id"].as_str(), patched.body["priority"].as_i64()),
        (200, Some(id), Some(7))
    );
    let fires = s.get(&format!("{by_name}/fires?limit=2")).await;
    assert_eq!((fires.status, fires.body["items"].as_array().map(Vec::len)), (200, Some(2)));
    let run = s.raw("POST", &format!("{by_name}/run"), None).await;
    assert_eq!((run.status, run.body["job_id"].as_str()), (201, Some(id)));
    assert_error(&s.get("/v1/jobs/ops%2Fmissing").await, 404, "not_found");
    assert_error(&s.get("/v1/jobs/default%2Fnightly").await, 404, "not_found");
    assert_eq!(s.raw("DELETE", by_name, None).await.status, 204);
    assert_error(&s.get(&format!("/v1/jobs/{id}")).await, 404, "not_found");
    s.stop().await;
}
