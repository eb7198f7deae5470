//! Access over real HTTP: the role × route × own/other-namespace matrix, walked over every route
//! the OpenAPI document lists (which a unit test holds equal to the router's routes), plus list
//! narrowing, batches, tokens-file errors and the in-process worker.

mod common;
use common::*;
use serde_json::{json, Value};

const OWN: &str = "own";
const OTHER: &str = "other";

/// What each route is, written out here (not taken from the server's code): a route the
/// OpenAPI document lists that is missing from this table fails the test.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Class {
    Read,
    Submit,
    Worker,
    GlobalRead,
    /// Limits and calendars: global objects only an admin of every namespace may change.
    GlobalWrite,
}

const ROUTES: &[(&str, &str, Class)] = &[
    ("POST", "/v1/jobs", Class::Submit),
    ("GET", "/v1/jobs", Class::Read),
    ("POST", "/v1/jobs/batch", Class::Submit),
    ("GET", "/v1/jobs/{id}", Class::Read),
    ("PATCH", "/v1/jobs/{id}", Class::Submit),
    ("DELETE", "/v1/jobs/{id}", Class::Submit),
    ("POST", "/v1/jobs/{id}/pause", Class::Submit),
    ("POST", "/v1/jobs/{id}/resume", Class::Submit),
    ("POST", "/v1/jobs/{id}/run", Class::Submit),
    ("GET", "/v1/jobs/{id}/fires", Class::Read),
    ("POST", "/v1/jobs/{id}/backfill", Class::Submit),
    ("POST", "/v1/triggers/preview", Class::Read),
    ("GET", "/v1/runs", Class::Read),
    ("GET", "/v1/runs/{id}", Class::Read),
    ("POST", "/v1/runs/{id}/cancel", Class::Submit),
    ("POST", "/v1/runs/{id}/retry", Class::Submit),
    ("GET", "/v1/runs/{id}/attempts", Class::Read),
    ("POST", "/v1/runs/bulk", Class::Submit),
    ("POST", "/v1/runs/{id}/complete", Class::Worker),
    ("POST", "/v1/workers", Class::Worker),
    ("GET", "/v1/workers", Class::GlobalRead),
    ("DELETE", "/v1/workers/{id}", Class::Worker),
    ("POST", "/v1/workers/{id}/claim", Class::Worker),
    ("POST", "/v1/workers/{id}/heartbeat", Class::Worker),
    ("GET", "/v1/limits", Class::GlobalRead),
    ("GET", "/v1/limits/{key}", Class::GlobalRead),
    ("PUT", "/v1/limits/{key}", Class::GlobalWrite),
    ("DELETE", "/v1/limits/{key}", Class::GlobalWrite),
    ("GET", "/v1/stats/runs", Class::GlobalRead),
    ("GET", "/v1/stats/handlers", Class::GlobalRead),
    ("GET", "/v1/calendars", Class::GlobalRead),
    ("GET", "/v1/calendars/{name}", Class::GlobalRead),
    ("PUT", "/v1/calendars/{name}", Class::GlobalWrite),
    ("DELETE", "/v1/calendars/{name}", Class::GlobalWrite),
];

/// The roles' reach, from API.md "Roles": (token, classes it may use, namespaces).
const ROLES: &[(&str, &[Class], bool)] = &[
    ("read-own", &[Class::Read, Class::GlobalRead], false),
    ("submit-own", &[Class::Read, Class::GlobalRead, Class::Submit], false),
    ("worker-own", &[Class::Worker], false),
    ("admin-own", &[Class::Read, Class::GlobalRead, Class::Submit, Class::Worker], false),
    ("admin-all", &[Class::Read, Class::GlobalRead, Class::Submit, Class::Worker, Class::GlobalWrite], true),
];

async fn start() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let mut tokens = vec![];
    for (name, role) in
        [("read-own", "read"), ("submit-own", "submit"), ("worker-own", "worker"), ("admin-own", "admin")]
    {
        tokens.push(json!({"name": name, "token": name, "role": role, "namespaces": [OWN]}));
    }
    tokens.push(json!({"name": "admin-all", "token": "admin-all", "role": "admin", "namespaces": ["*"]}));
    std::fs::write(&path, json!({ "tokens": tokens }).to_string()).unwrap();
    let s = TestServer::start(|c| c.tokens_file = Some(path.clone())).await;
    (s, dir)
}

async fn call(s: &TestServer, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    let mut r = s.http.request(method.parse().unwrap(), format!("{}{path}", s.base)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    Resp { status, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

/// A fresh job (with its due-now run) in `ns`; returns (job id, run id).
async fn job_in(s: &TestServer, ns: &str) -> (String, String) {
    let j = call(s, "admin-all", "POST", "/v1/jobs", Some(json!({"handler": "nobody", "namespace": ns}))).await;
    assert_eq!(j.status, 201, "{}", j.body);
    let id = j.body["id"].as_str().unwrap().to_string();
    let runs = call(s, "admin-all", "GET", &format!("/v1/runs?job_id={id}"), None).await;
    let run = runs.body["items"][0]["id"].as_str().expect("a due-now run").to_string();
    (id, run)
}

/// A fresh worker: "own" registered by the own-namespace worker token, "other" by the admin of
/// every namespace.
async fn worker_in(s: &TestServer, ns: &str) -> String {
    let token = if ns == OWN { "worker-own" } else { "admin-all" };
    let w = call(s, token, "POST", "/v1/workers", Some(json!({"handlers": ["nobody"]}))).await;
    assert_eq!(w.status, 201, "{}", w.body);
    w.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_route_follows_the_role_and_namespace_matrix() {
    let (s, _dir) = start().await;
    let doc = s.get("/openapi.json").await.body;
    let mut walked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let class = ROUTES
                .iter()
                .find(|(m, p, _)| *m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the access matrix"))
                .2;
            for (token, reach, all_namespaces) in ROLES {
                for ns in [OWN, OTHER] {
                    let (url, body) = prepare(&s, &method, path, ns).await;
                    let r = call(&s, token, &method, &url, body).await;
                    let what = format!("{token} {method} {path} in {ns}: {} {}", r.status, r.body);
                    walked += 1;
                    if !reach.contains(&class) {
                        assert_error(&r, 403, "forbidden");
                        continue;
                    }
                    let visible = *all_namespaces || ns == OWN;
                    let by_id = path.contains("{id}");
                    let creates = method == "POST" && (path == "/v1/jobs" || path == "/v1/jobs/batch");
                    if by_id && !visible {
                        assert_eq!(r.status, 404, "{what}");
                    } else if creates && !visible && path.ends_with("batch") {
                        assert_eq!(r.status, 200, "{what}");
                        assert_eq!(r.body["items"][0]["status"], 403, "{what}");
                    } else if creates && !visible {
                        assert_error(&r, 403, "forbidden");
                    } else {
                        assert!(![401, 403, 404].contains(&r.status) && r.status < 500, "{what}");
                    }
                }
            }
        }
    }
    assert!(walked >= ROUTES.len() * ROLES.len() * 2, "walked {walked}");
    // Every route of the table is one the document lists (no stale rows).
    for (m, p, _) in ROUTES {
        assert!(doc["paths"][p].get(m.to_lowercase()).is_some(), "{m} {p} is in the matrix but not served");
    }
    s.stop().await;
}

/// The URL (ids filled in with fresh objects in `ns`) and a valid body for one request.
async fn prepare(s: &TestServer, method: &str, path: &str, ns: &str) -> (String, Option<Value>) {
    let body = match (method, path) {
        ("POST", "/v1/jobs") => Some(json!({"handler": "echo", "namespace": ns})),
        ("POST", "/v1/jobs/batch") => Some(json!({"jobs": [{"handler": "echo", "namespace": ns}]})),
        ("PATCH", _) => Some(json!({"priority": 3})),
        ("POST", "/v1/workers") => Some(json!({"handlers": ["echo"]})),
        ("POST", "/v1/workers/{id}/claim") => Some(json!({"max": 1})),
        ("POST", "/v1/workers/{id}/heartbeat") => Some(json!({"runs": []})),
        ("POST", "/v1/triggers/preview") => Some(json!({"trigger": {"kind": "interval", "every": "1m"}})),
        ("POST", "/v1/runs/bulk") => Some(json!({"action": "cancel", "filter": {"namespace": ns}})),
        ("PUT", "/v1/limits/{key}") => Some(json!({"max_running": 2})),
        ("PUT", "/v1/calendars/{name}") => Some(json!({"exclude": [{"date": "2026-12-25"}]})),
        ("POST", "/v1/jobs/{id}/backfill") => {
            Some(json!({"from": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}))
        }
        _ => None,
    };
    if path.contains("{name}") {
        // A fresh calendar each time, so a DELETE always has one to delete.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!("c-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let put = call(s, "admin-all", "PUT", &format!("/v1/calendars/{name}"), Some(json!({}))).await;
        assert_eq!(put.status, 200, "{}", put.body);
        return (path.replace("{name}", &name), body);
    }
    if path.contains("{key}") {
        // A fresh limit each time, so a DELETE always has one to delete.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let key = format!("k-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let put = call(s, "admin-all", "PUT", &format!("/v1/limits/{key}"), Some(json!({"max_running": 1}))).await;
        assert_eq!(put.status, 200, "{}", put.body);
        return (path.replace("{key}", &key), body);
    }
    if path.starts_with("/v1/jobs/{id}") {
        let (job, _) = job_in(s, ns).await;
        return (path.replace("{id}", &job), body);
    }
    if path == "/v1/runs/{id}/complete" {
        let (_, run) = job_in(s, ns).await;
        // A worker the own-namespace tokens may act for; the attempt is stale (409) when allowed.
        let worker = worker_in(s, OWN).await;
        let body = json!({"worker_id": worker, "attempt": 1, "state": "succeeded"});
        return (path.replace("{id}", &run), Some(body));
    }
    if path.starts_with("/v1/runs/{id}") {
        let (_, run) = job_in(s, ns).await;
        return (path.replace("{id}", &run), body);
    }
    if path.starts_with("/v1/workers/{id}") {
        let worker = worker_in(s, ns).await;
        return (path.replace("{id}", &worker), body);
    }
    if method == "GET" && (path == "/v1/jobs" || path == "/v1/runs" || path == "/v1/stats/runs") {
        return (format!("{path}?namespace={ns}"), None);
    }
    (path.to_string(), body)
}

#[tokio::test]
async fn lists_show_only_the_token_namespaces() {
    let (s, _dir) = start().await;
    job_in(&s, OWN).await;
    job_in(&s, OTHER).await;
    for list in ["/v1/jobs", "/v1/runs"] {
        let mine = call(&s, "read-own", "GET", list, None).await;
        assert_eq!(mine.status, 200);
        let items = mine.body["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.iter().all(|i| i["namespace"] == OWN), "{list}: {}", mine.body);
        let other = call(&s, "read-own", "GET", &format!("{list}?namespace={OTHER}"), None).await;
        assert_eq!((other.status, other.body["items"].as_array().unwrap().len()), (200, 0), "{list}");
        let all = call(&s, "admin-all", "GET", list, None).await;
        assert_eq!(all.body["items"].as_array().unwrap().len(), 2, "{list}");
    }
    s.stop().await;
}

/// The total of one field over a stats answer's items.
fn total(body: &Value, field: &str) -> u64 {
    body["items"].as_array().unwrap().iter().map(|i| i[field].as_u64().unwrap_or(0)).sum()
}

#[tokio::test]
async fn stats_count_only_the_token_namespaces() {
    let (s, _dir) = start().await;
    let (_, own_run) = job_in(&s, OWN).await;
    let (_, other_run) = job_in(&s, OTHER).await;
    job_in(&s, OWN).await;
    job_in(&s, OTHER).await;
    for run in [own_run, other_run] {
        let r = call(&s, "admin-all", "POST", &format!("/v1/runs/{run}/cancel"), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mine = call(&s, "read-own", "GET", "/v1/stats/runs", None).await;
    assert_eq!((mine.status, total(&mine.body, "cancelled")), (200, 1), "{}", mine.body);
    let hidden = call(&s, "read-own", "GET", &format!("/v1/stats/runs?namespace={OTHER}"), None).await;
    assert_eq!((hidden.status, total(&hidden.body, "cancelled")), (200, 0), "{}", hidden.body);
    let all = call(&s, "admin-all", "GET", "/v1/stats/runs", None).await;
    assert_eq!(total(&all.body, "cancelled"), 2, "{}", all.body);

    let nobody = |body: &Value| body["items"].as_array().unwrap().iter().find(|q| q["handler"] == "nobody").cloned();
    let mine = call(&s, "read-own", "GET", "/v1/stats/handlers", None).await;
    assert_eq!(mine.status, 200);
    assert_eq!(nobody(&mine.body).expect("nobody's queue")["pending"], 1, "{}", mine.body);
    let all = call(&s, "admin-all", "GET", "/v1/stats/handlers", None).await;
    assert_eq!(nobody(&all.body).expect("nobody's queue")["pending"], 2, "{}", all.body);
    s.stop().await;
}

#[tokio::test]
async fn no_or_unknown_token_is_401_and_health_stays_open() {
    let (s, _dir) = start().await;
    let anon = reqwest::Client::new();
    let r = anon.get(format!("{}/v1/jobs", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = call(&s, "not-a-token", "GET", "/v1/jobs", None).await;
    assert_error(&r, 401, "unauthorized");
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(anon.get(format!("{}{open}", s.base)).send().await.unwrap().status(), 200, "{open}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_bad_tokens_file_stops_the_node_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(&path, r#"{"tokens": [{"name": "x", "token": "t", "role": "root", "namespaces": ["*"]}]}"#).unwrap();
    let cfg = sundial_server::node::NodeConfig {
        db: format!("sqlite://{}/t.db", dir.path().display()),
        listen: "127.0.0.1:0".into(),
        workers: 0,
        tokens_file: Some(path.clone()),
        ..Default::default()
    };
    let err = sundial_server::node::Node::start(cfg.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("role"), "{err}");
    let missing = sundial_server::node::NodeConfig { tokens_file: Some(dir.path().join("absent.json")), ..cfg };
    let err = sundial_server::node::Node::start(missing).await.err().expect("refused");
    assert!(err.to_string().contains("absent.json"), "{err}");
}

#[tokio::test]
async fn an_empty_tokens_file_refuses_every_v1_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    std::fs::write(&path, r#"{"tokens": []}"#).unwrap();
    let s = TestServer::start(|c| c.tokens_file = Some(path.clone())).await;
    assert_error(&s.get("/v1/jobs").await, 401, "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn the_in_process_worker_cannot_be_deregistered_over_http_even_without_tokens() {
    let s = TestServer::with_workers(1).await;
    let workers = s
        .wait_for("/v1/workers", "the in-process worker registered", |b| {
            b["items"].as_array().is_some_and(|i| !i.is_empty())
        })
        .await;
    let id = workers["items"][0]["id"].as_str().unwrap().to_string();
    let r = s.req("DELETE", &format!("/v1/workers/{id}"), None).await;
    assert_error(&r, 403, "in_process_worker");
    let r = s.post(&format!("/v1/workers/{id}/claim"), json!({"max": 1})).await;
    assert_error(&r, 403, "in_process_worker");
    let after = s.get("/v1/workers").await;
    assert_eq!(after.body["items"][0]["state"], "active", "{}", after.body);
    s.stop().await;
}

/// A worker registered by a token bound to one namespace claims only that namespace's runs,
/// while older runs of another namespace are due; a worker of every namespace gets those.
#[tokio::test]
async fn a_namespace_bound_worker_claims_only_runs_of_its_namespaces() {
    let (s, _dir) = start().await;
    let (_, other_first) = job_in(&s, OTHER).await;
    let (_, own_run) = job_in(&s, OWN).await;
    let (_, other_second) = job_in(&s, OTHER).await;
    let bound = worker_in(&s, OWN).await;
    let r = call(&s, "worker-own", "POST", &format!("/v1/workers/{bound}/claim"), Some(json!({"max": 10}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got: Vec<&str> = r.body["runs"].as_array().unwrap().iter().map(|c| c["run_id"].as_str().unwrap()).collect();
    assert_eq!(got, vec![own_run.as_str()], "only the own namespace's run: {}", r.body);
    let all = worker_in(&s, OTHER).await;
    let r = call(&s, "admin-all", "POST", &format!("/v1/workers/{all}/claim"), Some(json!({"max": 10}))).await;
    let mut got: Vec<&str> = r.body["runs"].as_array().unwrap().iter().map(|c| c["run_id"].as_str().unwrap()).collect();
    got.sort();
    let mut want = vec![other_first.as_str(), other_second.as_str()];
    want.sort();
    assert_eq!(got, want, "the other namespace's runs were left for a worker of every namespace");
    s.stop().await;
}

/// A bulk action by a namespace-bound token never matches or touches another namespace's runs,
/// even with `{"all": true}`.
#[tokio::test]
async fn bulk_is_narrowed_to_the_tokens_namespaces() {
    let (s, _dir) = start().await;
    let (_, own_run) = job_in(&s, OWN).await;
    let (_, other_run) = job_in(&s, OTHER).await;
    let all = json!({"action": "cancel", "filter": {"all": true}});
    let r = call(&s, "submit-own", "POST", "/v1/runs/bulk", Some(all)).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"matched": 1, "changed": 1})), "{}", r.body);
    let other = call(&s, "admin-all", "GET", &format!("/v1/runs/{other_run}"), None).await;
    assert_eq!(other.body["state"], "pending", "another namespace is untouched");
    let own = call(&s, "admin-all", "GET", &format!("/v1/runs/{own_run}"), None).await;
    assert_eq!(own.body["state"], "cancelled");
    let asked_other = json!({"action": "retry", "filter": {"namespace": OTHER}});
    let r = call(&s, "submit-own", "POST", "/v1/runs/bulk", Some(asked_other)).await;
    assert_eq!(r.body, json!({"matched": 0, "changed": 0}));
    s.stop().await;
}
