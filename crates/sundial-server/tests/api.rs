//! The wire contract of API.md, endpoint by endpoint and error by error, over real HTTP.

mod common;
use common::*;
use serde_json::{json, Value};
use sundial_core::signals::Event;

const JOB_FIELDS: &[&str] = &[
    "id",
    "name",
    "namespace",
    "handler",
    "payload",
    "priority",
    "retry",
    "timeout",
    "overlap",
    "paused",
    "idempotency_key",
    "triggers",
    "created_at",
    "updated_at",
    "next_fire_time",
    "running",
    "last_start_time",
    "last_end_time",
    "last_worker",
    "pause_after_failures",
    "paused_reason",
];
const TRIGGER_FIELDS: &[&str] = &[
    "id",
    "kind",
    "at",
    "expr",
    "timezone",
    "every",
    "start_at",
    "end_at",
    "max_fires",
    "misfire",
    "catch_up_limit",
    "next_fire_at",
    "fires",
];
const RUN_FIELDS: &[&str] = &[
    "id",
    "job_id",
    "trigger_id",
    "scheduled_for",
    "state",
    "attempt",
    "worker_id",
    "started_at",
    "finished_at",
    "output",
    "error",
    "reason",
];

fn has_fields(v: &Value, fields: &[&str]) {
    for f in fields {
        assert!(v.get(*f).is_some(), "field {f} missing in {v}");
    }
}

#[tokio::test]
async fn create_job_answers_201_with_every_field_and_trigger_fields() {
    let s = TestServer::with_workers(0).await;
    let r = s
        .post(
            "/v1/jobs",
            json!({"name": "nightly", "handler": "echo", "triggers": [
                {"kind": "cron", "expr": "0 */5 * * * *", "timezone": "Europe/Berlin"},
                {"kind": "interval", "every": "15s"},
                {"kind": "once", "at": "2030-01-01T00:00:00Z", "misfire": "catch_up"}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    has_fields(&r.body, JOB_FIELDS);
    assert_eq!(r.body["namespace"], "default");
    assert_eq!(r.body["payload"], json!({}));
    assert_eq!(r.body["retry"], json!({"max_attempts": 5, "initial_delay": "1s", "max_delay": "10m"}));
    let triggers = r.body["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 3);
    for t in triggers {
        has_fields(t, TRIGGER_FIELDS);
        assert_eq!(t["fires"], 0);
        assert!(t["next_fire_at"].is_string());
    }
    assert_eq!(triggers[0]["misfire"], "fire_once");
    assert_eq!(triggers[0]["catch_up_limit"], Value::Null);
    assert_eq!(triggers[2]["catch_up_limit"], 10);
    assert!(r.body["next_fire_time"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn idempotency_key_replay_is_200_and_a_different_definition_is_409() {
    let s = TestServer::with_workers(0).await;
    let body = json!({"handler": "echo", "idempotency_key": "order-42", "payload": {"n": 1}});
    let a = s.post("/v1/jobs", body.clone()).await;
    assert_eq!(a.status, 201);
    let b = s.post("/v1/jobs", body).await;
    assert_eq!(b.status, 200);
    assert_eq!(a.body["id"], b.body["id"]);
    let c = s.post("/v1/jobs", json!({"handler": "echo", "idempotency_key": "order-42", "payload": {"n": 2}})).await;
    assert_error(&c, 409, "idempotency_conflict");
    s.stop().await;
}

#[tokio::test]
async fn same_name_same_definition_is_200_and_different_definition_is_409() {
    let s = TestServer::with_workers(0).await;
    let body = json!({"name": "report", "handler": "echo", "triggers": [{"kind": "interval", "every": "1h"}]});
    assert_eq!(s.post("/v1/jobs", body.clone()).await.status, 201);
    assert_eq!(s.post("/v1/jobs", body).await.status, 200);
    let r = s.post("/v1/jobs", json!({"name": "report", "handler": "other"})).await;
    assert_eq!(r.status, 409);
    s.stop().await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let s = TestServer::with_workers(0).await;
    let r = s.raw("POST", "/v1/jobs", Some(b"{not json".to_vec())).await;
    assert_error(&r, 400, "malformed_json");
    s.stop().await;
}

#[tokio::test]
async fn invalid_values_are_422_naming_the_field_path() {
    let s = TestServer::with_workers(0).await;
    let cases = [
        (json!({"payload": {}}), "handler"),
        (
            json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1s"}, {"kind": "cron", "expr": "not a cron"}]}),
            "triggers[1].expr",
        ),
        (
            json!({"handler": "echo", "triggers": [{"kind": "cron", "expr": "* * * * *", "timezone": "Mars/Olympus"}]}),
            "triggers[0].timezone",
        ),
        (
            json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1s", "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}]}),
            "triggers[0].end_at",
        ),
        (json!({"handler": "echo", "priority": "high"}), "priority"),
        (json!({"handler": "echo", "timeout": "soon"}), "timeout"),
        (json!({"handler": "echo", "overlap": "sometimes"}), "overlap"),
        (json!({"handler": "echo", "retry": {"max_attempts": 0}}), "retry.max_attempts"),
        (json!({"handler": "echo", "triggers": [{"kind": "weekly"}]}), "triggers[0].kind"),
    ];
    for (body, path) in cases {
        let r = s.post("/v1/jobs", body.clone()).await;
        assert_error(&r, 422, "invalid_value");
        let msg = r.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(path), "message {msg:?} should start with {path:?} for {body}");
    }
    s.stop().await;
}

#[tokio::test]
async fn body_over_max_body_is_413_with_the_error_shape() {
    let s = TestServer::start(|c| c.max_body = 1024).await;
    let big = json!({"handler": "echo", "payload": {"x": "a".repeat(4096)}});
    let r = s.post("/v1/jobs", big).await;
    assert_error(&r, 413, "body_too_large");
    s.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_404() {
    let s = TestServer::with_workers(0).await;
    assert_error(&s.get("/v1/jobs/nope").await, 404, "not_found");
    assert_error(&s.get("/v1/runs/nope").await, 404, "not_found");
    assert_error(&s.req("DELETE", "/v1/jobs/nope", None).await, 404, "not_found");
    assert_error(&s.post("/v1/jobs/nope/pause", json!({})).await, 404, "not_found");
    assert_error(&s.post("/v1/runs/nope/cancel", json!({})).await, 404, "not_found");
    assert_error(&s.post("/v1/workers/nope/claim", json!({"max": 1})).await, 404, "not_found");
    assert_error(&s.post("/v1/workers/nope/heartbeat", json!({"runs": []})).await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn batch_items_stand_alone() {
    let s = TestServer::with_workers(0).await;
    let r = s
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [
                {"handler": "echo", "name": "a"},
                {"handler": "echo", "triggers": [{"kind": "cron", "expr": "bad"}]},
                {"handler": "echo", "name": "b"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["status"], 201);
    assert_eq!(items[1]["status"], 422);
    assert_eq!(items[1]["error"]["code"], "invalid_value");
    assert_eq!(items[2]["status"], 201);
    assert_eq!(s.get("/v1/jobs").await.body["items"].as_array().unwrap().len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn list_jobs_is_newest_first_with_cursor_and_filters() {
    let s = TestServer::with_workers(0).await;
    for i in 0..5 {
        let ns = if i % 2 == 0 { "even" } else { "odd" };
        s.post("/v1/jobs", json!({"handler": "echo", "name": format!("j{i}"), "namespace": ns})).await;
    }
    let p1 = s.get("/v1/jobs?limit=2").await.body;
    let names: Vec<_> = p1["items"].as_array().unwrap().iter().map(|j| j["name"].clone()).collect();
    assert_eq!(names, vec![json!("j4"), json!("j3")]);
    let cursor = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = s.get(&format!("/v1/jobs?limit=2&cursor={cursor}")).await.body;
    assert_eq!(p2["items"][0]["name"], "j2");
    let p3 = s.get(&format!("/v1/jobs?limit=2&cursor={}", p2["next_cursor"].as_str().unwrap())).await.body;
    assert_eq!(p3["items"].as_array().unwrap().len(), 1);
    assert_eq!(p3["next_cursor"], Value::Null);
    assert_eq!(s.get("/v1/jobs?namespace=even").await.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(s.get("/v1/jobs?handler=other").await.body["items"].as_array().unwrap().len(), 0);
    assert_error(&s.get("/v1/jobs?cursor=garbage").await, 422, "invalid_value");
    s.stop().await;
}

#[tokio::test]
async fn patch_replaces_fields_and_triggers_and_answers_200() {
    let s = TestServer::with_workers(0).await;
    let j = s
        .post("/v1/jobs", json!({"handler": "echo", "name": "p", "triggers": [{"kind": "interval", "every": "1h"}]}))
        .await
        .body;
    let id = j["id"].as_str().unwrap();
    let r = s
        .req(
            "PATCH",
            &format!("/v1/jobs/{id}"),
            Some(json!({"priority": 7, "triggers": [{"kind": "cron", "expr": "0 0 * * *"}]})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["priority"], 7);
    assert_eq!(r.body["name"], "p");
    assert_eq!(r.body["triggers"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["triggers"][0]["kind"], "cron");
    let bad =
        s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"triggers": [{"kind": "cron", "expr": "x"}]}))).await;
    assert_error(&bad, 422, "invalid_value");
    s.stop().await;
}

#[tokio::test]
async fn delete_is_204_then_404_and_pending_runs_are_cancelled_but_queryable() {
    let s = TestServer::with_workers(0).await;
    let j = s.post("/v1/jobs", json!({"handler": "echo"})).await.body;
    let id = j["id"].as_str().unwrap();
    let r = s.req("DELETE", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(r.status, 204);
    assert_error(&s.get(&format!("/v1/jobs/{id}")).await, 404, "not_found");
    let runs = s.get(&format!("/v1/runs?job_id={id}")).await.body;
    assert_eq!(runs["items"][0]["state"], "cancelled");
    assert_eq!(runs["items"][0]["reason"], "job deleted");
    s.stop().await;
}

#[tokio::test]
async fn pause_resume_and_run_now_accept_empty_bodies() {
    let s = TestServer::with_workers(0).await;
    let j =
        s.post("/v1/jobs", json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "1h"}]})).await.body;
    let id = j["id"].as_str().unwrap();
    let p = s.raw("POST", &format!("/v1/jobs/{id}/pause"), None).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["paused"], true);
    assert!(p.body["next_fire_time"].is_string(), "paused job still shows its next fire time");
    let r = s.raw("POST", &format!("/v1/jobs/{id}/run"), None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    has_fields(&r.body, RUN_FIELDS);
    assert_eq!(r.body["state"], "pending");
    assert_eq!(r.body["trigger_id"], Value::Null);
    let q = s.raw("POST", &format!("/v1/jobs/{id}/resume"), None).await;
    assert_eq!(q.status, 200);
    assert_eq!(q.body["paused"], false);
    s.stop().await;
}

#[tokio::test]
async fn runs_list_filters_by_state_job_and_time_with_cursor() {
    let s = TestServer::with_workers(0).await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(s.post("/v1/jobs", json!({"handler": "echo"})).await.body["id"].as_str().unwrap().to_string());
    }
    let all = s.get("/v1/runs?limit=2").await.body;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let next = s.get(&format!("/v1/runs?limit=2&cursor={}", all["next_cursor"].as_str().unwrap())).await.body;
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert_eq!(s.get(&format!("/v1/runs?job_id={}", ids[0])).await.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(s.get("/v1/runs?state=pending").await.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(s.get("/v1/runs?state=succeeded").await.body["items"].as_array().unwrap().len(), 0);
    assert_eq!(s.get("/v1/runs?since=2100-01-01T00:00:00Z").await.body["items"].as_array().unwrap().len(), 0);
    assert_eq!(s.get("/v1/runs?until=2100-01-01T00:00:00Z").await.body["items"].as_array().unwrap().len(), 3);
    assert_error(&s.get("/v1/runs?state=sleepy").await, 422, "invalid_value");
    assert_error(&s.get("/v1/runs?since=yesterday").await, 422, "invalid_value");
    let run = &all["items"][0];
    let one = s.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap())).await;
    assert_eq!(one.status, 200);
    has_fields(&one.body, RUN_FIELDS);
    s.stop().await;
}

#[tokio::test]
async fn cancel_pending_is_200_cancelled_and_cancel_again_is_409_already_finished() {
    let s = TestServer::with_workers(0).await;
    let j = s.post("/v1/jobs", json!({"handler": "echo"})).await.body;
    let run = s.get(&format!("/v1/runs?job_id={}", j["id"].as_str().unwrap())).await.body["items"][0].clone();
    let path = format!("/v1/runs/{}/cancel", run["id"].as_str().unwrap());
    let r = s.raw("POST", &path, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "cancelled");
    assert_error(&s.raw("POST", &path, None).await, 409, "already_finished");
    s.stop().await;
}

#[tokio::test]
async fn worker_protocol_register_claim_heartbeat_complete_deregister() {
    let s = TestServer::with_workers(0).await;
    let reg = s.post("/v1/workers", json!({"name": "w1", "handlers": ["echo"], "capacity": 8})).await;
    assert_eq!(reg.status, 201, "{}", reg.body);
    assert_eq!(reg.body["lease"], "30s");
    assert_eq!(reg.body["heartbeat_interval"], "10s");
    let wid = reg.body["id"].as_str().unwrap().to_string();
    let job = s.post("/v1/jobs", json!({"handler": "echo", "payload": {"a": 1}, "timeout": "5s"})).await.body;
    let c = s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 8, "wait": "1s"})).await;
    assert_eq!(c.status, 200, "{}", c.body);
    let run = c.body["runs"][0].clone();
    for f in ["run_id", "attempt", "job_id", "handler", "payload", "timeout", "scheduled_for", "lease_expires_at"] {
        assert!(run.get(f).is_some(), "claim field {f} missing: {run}");
    }
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["job_id"], job["id"]);
    assert_eq!(run["payload"], json!({"a": 1}));
    assert_eq!(run["timeout"], "5s");
    let run_id = run["run_id"].as_str().unwrap();
    let hb = s
        .post(
            &format!("/v1/workers/{wid}/heartbeat"),
            json!({"runs": [{"run_id": run_id, "attempt": 1}, {"run_id": "gone", "attempt": 1}]}),
        )
        .await;
    assert_eq!(hb.status, 200);
    assert!(hb.body["lease_expires_at"].is_string());
    assert_eq!(hb.body["cancel"], json!([]));
    assert_eq!(hb.body["lost"], json!(["gone"]));
    let stale = s
        .post(&format!("/v1/runs/{run_id}/complete"), json!({"worker_id": wid, "attempt": 2, "state": "succeeded"}))
        .await;
    assert_error(&stale, 409, "stale_attempt");
    let done = s
        .post(
            &format!("/v1/runs/{run_id}/complete"),
            json!({"worker_id": wid, "attempt": 1, "state": "succeeded", "output": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["state"], "succeeded");
    assert_eq!(done.body["output"], json!({"ok": true}));
    let again = s
        .post(&format!("/v1/runs/{run_id}/complete"), json!({"worker_id": wid, "attempt": 1, "state": "succeeded"}))
        .await;
    assert_error(&again, 409, "stale_attempt");
    let workers = s.get("/v1/workers").await.body;
    let w = &workers["items"][0];
    for f in ["id", "name", "handlers", "capacity", "state", "last_heartbeat", "running"] {
        assert!(w.get(f).is_some(), "worker field {f} missing: {w}");
    }
    assert_eq!(w["state"], "active");
    assert_eq!(s.req("DELETE", &format!("/v1/workers/{wid}"), None).await.status, 204);
    assert_error(&s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 1})).await, 404, "not_found");
    s.stop().await;
}

#[tokio::test]
async fn claim_long_polls_and_wakes_when_a_run_is_submitted() {
    // The clock never moves: the dispatcher's safety poll and the claim's own deadline never
    // come, so only the wake-up sent by the submission can end the wait.
    let (_clock, shared) = manual_clock();
    let s = TestServer::start(|c| c.clock = shared).await;
    let wid = s.post("/v1/workers", json!({"name": "w", "handlers": ["echo"], "capacity": 1})).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut events = s.signals().events();
    let base = s.base.clone();
    let claimer = tokio::spawn(async move {
        let r: Value = reqwest::Client::new()
            .post(format!("{base}/v1/workers/{wid}/claim"))
            .json(&json!({"max": 1, "wait": "20s"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r
    });
    let wait = std::time::Duration::from_secs(20);
    events.wait_for("the claim to park", wait, |e| matches!(e, Event::ClaimParked { .. })).await;
    s.post("/v1/jobs", json!({"handler": "echo"})).await;
    let r = tokio::time::timeout(wait, claimer).await.expect("the parked claim was not woken").unwrap();
    assert_eq!(r["runs"].as_array().unwrap().len(), 1, "{r}");
    s.stop().await;
}

#[tokio::test]
async fn in_process_workers_run_echo_and_store_output_and_job_fields() {
    let s = TestServer::with_workers(2).await;
    let j = s.post("/v1/jobs", json!({"handler": "echo", "payload": {"to": "a@b.c"}})).await.body;
    let id = j["id"].as_str().unwrap().to_string();
    let runs = s
        .wait_for(&format!("/v1/runs?job_id={id}"), "echo run to succeed", |b| b["items"][0]["state"] == "succeeded")
        .await;
    assert_eq!(runs["items"][0]["output"], json!({"to": "a@b.c"}));
    let job = s.get(&format!("/v1/jobs/{id}")).await.body;
    assert!(job["last_start_time"].is_string());
    assert!(job["last_end_time"].is_string());
    assert!(job["last_worker"].is_string());
    assert_eq!(job["running"], false);
    s.stop().await;
}

#[tokio::test]
async fn failing_run_records_failed_with_error_and_reason() {
    let s = TestServer::start(|c| {
        c.workers = 1;
        c.enable_shell = true;
    })
    .await;
    let j = s
        .post(
            "/v1/jobs",
            json!({"handler": "shell", "payload": {"command": "echo oops >&2; exit 3"}, "retry": {"max_attempts": 1}}),
        )
        .await
        .body;
    let id = j["id"].as_str().unwrap();
    let runs =
        s.wait_for(&format!("/v1/runs?job_id={id}"), "shell run to fail", |b| b["items"][0]["state"] == "failed").await;
    let run = &runs["items"][0];
    assert_eq!(run["output"]["exit_code"], 3);
    assert!(run["output"]["stderr"].as_str().unwrap().contains("oops"));
    assert!(run["error"].is_string());
    assert!(run["reason"].as_str().unwrap().contains("attempts exhausted"), "{run}");
    s.stop().await;
}

#[tokio::test]
async fn shell_handler_is_off_unless_enabled_so_its_runs_wait() {
    let s = TestServer::with_workers(1).await;
    let j = s.post("/v1/jobs", json!({"handler": "shell", "payload": {"command": "true"}})).await.body;
    s.claim_passed_over_pending_runs().await;
    let runs = s.get(&format!("/v1/runs?job_id={}", j["id"].as_str().unwrap())).await.body;
    assert_eq!(runs["items"][0]["state"], "pending", "no live worker serves shell: {runs}");
    s.stop().await;
}

#[tokio::test]
async fn ops_endpoints_answer() {
    let s = TestServer::with_workers(0).await;
    assert_eq!(s.get("/healthz").await.status, 200);
    assert_eq!(s.get("/readyz").await.status, 200);
    let m = s.http.get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("sundial_runs"), "{m}");
    let o = s.get("/openapi.json").await;
    assert_eq!(o.status, 200);
    for p in ["/v1/jobs", "/v1/jobs/{id}", "/v1/runs", "/v1/workers/{id}/claim", "/v1/runs/{id}/complete"] {
        assert!(o.body["paths"].get(p).is_some(), "openapi lacks {p}");
    }
    let d = s.http.get(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(d.status(), 200);
    assert!(d.text().await.unwrap().contains("sundial"));
    s.stop().await;
}

#[tokio::test]
async fn tokens_guard_v1_but_not_health_or_metrics() {
    let s = TestServer::start(|c| c.tokens = vec!["s3cret".into()]).await;
    assert_eq!(s.get("/v1/jobs").await.status, 200, "with the token");
    let anon = reqwest::Client::new();
    let r = anon.get(format!("{}/v1/jobs", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = anon.get(format!("{}/v1/jobs", s.base)).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(anon.get(format!("{}{open}", s.base)).send().await.unwrap().status(), 200, "{open}");
    }
    s.stop().await;
}

/// `pause_after_failures` (an integer ≥ 1 or null, on create, PATCH and batch items; 422 on its
/// path otherwise) and `paused_reason` (always present): two failed runs in a row pause the job
/// with a reason, and resume clears it.
#[tokio::test]
async fn pause_after_failures_is_checked_and_pauses_the_job_with_a_reason() {
    let s = TestServer::start(|_| {}).await;
    let plain = s.post("/v1/jobs", json!({"handler": "nobody"})).await;
    assert_eq!(plain.status, 201, "{}", plain.body);
    assert_eq!((&plain.body["pause_after_failures"], &plain.body["paused_reason"]), (&Value::Null, &Value::Null));
    for bad in [json!(0), json!(-1), json!(2.5), json!("3"), json!(1u64 << 33)] {
        let r = s.post("/v1/jobs", json!({"handler": "nobody", "pause_after_failures": bad})).await;
        assert_error(&r, 422, "invalid_value");
        let m = r.body["error"]["message"].as_str().unwrap_or("");
        assert!(m.starts_with("pause_after_failures"), "{bad}: {}", r.body);
        let id = plain.body["id"].as_str().unwrap();
        let r = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"pause_after_failures": bad}))).await;
        assert_error(&r, 422, "invalid_value");
    }
    let batch = s.post("/v1/jobs/batch", json!({"jobs": [{"handler": "nobody", "pause_after_failures": 0}]})).await;
    assert_eq!(batch.body["items"][0]["status"], 422, "{}", batch.body);

    let job =
        s.post("/v1/jobs", json!({"handler": "echo", "retry": {"max_attempts": 1}, "pause_after_failures": 5})).await;
    assert_eq!((job.status, &job.body["pause_after_failures"]), (201, &json!(5)), "{}", job.body);
    let id = job.body["id"].as_str().unwrap().to_string();
    let r = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"pause_after_failures": null}))).await;
    assert_eq!((r.status, &r.body["pause_after_failures"]), (200, &Value::Null), "{}", r.body);
    let r = s.req("PATCH", &format!("/v1/jobs/{id}"), Some(json!({"pause_after_failures": 2}))).await;
    assert_eq!((r.status, &r.body["pause_after_failures"]), (200, &json!(2)), "{}", r.body);

    let reg = s.post("/v1/workers", json!({"handlers": ["echo"]})).await;
    let wid = reg.body["id"].as_str().unwrap().to_string();
    for i in 0..2 {
        if i > 0 {
            assert_eq!(s.post(&format!("/v1/jobs/{id}/run"), json!({})).await.status, 201);
        }
        let c = s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 1})).await;
        let run = &c.body["runs"][0];
        let done = s
            .post(
                &format!("/v1/runs/{}/complete", run["run_id"].as_str().expect("a run to claim")),
                json!({"worker_id": wid, "attempt": run["attempt"], "state": "failed", "error": "boom"}),
            )
            .await;
        assert_eq!((done.status, &done.body["state"]), (200, &json!("failed")), "{}", done.body);
    }
    let paused = s.get(&format!("/v1/jobs/{id}")).await.body;
    assert_eq!(paused["paused"], true, "{paused}");
    assert_eq!(paused["paused_reason"], "paused after 2 runs in a row failed");
    let resumed = s.post(&format!("/v1/jobs/{id}/resume"), json!({})).await.body;
    assert_eq!((&resumed["paused"], &resumed["paused_reason"]), (&json!(false), &Value::Null), "{resumed}");
    s.stop().await;
}

/// `"retry": false` on a complete (the worker's refused command) fails the run at once, with
/// its error as the reason, though attempts are left.
#[tokio::test]
async fn a_complete_with_retry_false_is_not_retried() {
    let s = TestServer::start(|_| {}).await;
    let job = s.post("/v1/jobs", json!({"handler": "shell", "retry": {"max_attempts": 3}})).await;
    assert_eq!(job.status, 201, "{}", job.body);
    let wid = s.post("/v1/workers", json!({"handlers": ["shell"]})).await.body["id"].as_str().unwrap().to_string();
    let c = s.post(&format!("/v1/workers/{wid}/claim"), json!({"max": 1})).await;
    let run_id = c.body["runs"][0]["run_id"].as_str().expect("a run").to_string();
    let body =
        json!({"worker_id": wid, "attempt": 1, "state": "failed", "error": "command not allowed", "retry": false});
    let done = s.post(&format!("/v1/runs/{run_id}/complete"), body).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!((&done.body["state"], &done.body["reason"]), (&json!("failed"), &json!("command not allowed")));
    s.stop().await;
}
