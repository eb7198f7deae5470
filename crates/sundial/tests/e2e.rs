//! Whole processes: `sundial serve` and `sundial worker` as children, spoken to over real HTTP,
//! killed with SIGKILL. Waits are bounded polls; outcomes are asserted on stored state.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use sundial_core::testing::eventually;
use support::*;

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap()
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn wait_for(base: &str, path: &str, what: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
    let pred = &pred;
    eventually(what, Duration::from_secs(secs), move || async move {
        let v = get(base, path).await;
        pred(&v).then_some(v)
    })
    .await
}

async fn all_runs(base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/runs?limit=1000&cursor={c}"),
            None => "/v1/runs?limit=1000".to_string(),
        };
        let page = get(base, &path).await;
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn accepted_jobs_survive_sigkill_of_the_server_and_each_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/durable.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = serve(&db, port, &["--workers", "0"]);
    wait_ready(&base).await;

    // Submit concurrently; the server is killed while submissions are still in flight.
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for c in 0..16 {
        let base = base.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for i in 0..1000 {
                let r = http
                    .post(format!("{base}/v1/jobs"))
                    .json(&json!({"handler": "echo", "payload": {"c": c, "i": i}}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        accepted.lock().unwrap().push(v["id"].as_str().unwrap().to_string());
                    }
                    _ => return,
                }
            }
        }));
    }
    let counted = &accepted;
    eventually("300 accepted submissions", Duration::from_secs(60), move || async move {
        (counted.lock().unwrap().len() >= 300).then_some(())
    })
    .await;
    server.kill9();
    for t in tasks {
        let _ = t.await;
    }
    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 300);

    let mut server = serve(&db, port, &["--workers", "4"]);
    wait_ready(&base).await;
    for id in &accepted {
        let j = get(&base, &format!("/v1/jobs/{id}")).await;
        assert_eq!(j["id"], id.as_str(), "accepted job {id} lost after SIGKILL: {j}");
    }
    let n = accepted.len();
    // Waits for every run to be finished (neither pending nor running), then asserts how.
    let base_ref = base.as_str();
    let runs = eventually("every run to finish", Duration::from_secs(60), move || async move {
        let runs = all_runs(base_ref).await;
        runs.iter().all(|r| r["state"] != "pending" && r["state"] != "running").then_some(runs)
    })
    .await;
    let mut per_job = std::collections::HashMap::<String, Vec<&Value>>::new();
    for r in &runs {
        per_job.entry(r["job_id"].as_str().unwrap().to_string()).or_default().push(r);
    }
    for id in &accepted {
        let rs = &per_job[id];
        assert_eq!(rs.len(), 1, "job {id} has {} runs", rs.len());
        assert_eq!(rs[0]["state"], "succeeded", "{}", rs[0]);
        assert_eq!(rs[0]["attempt"], 1, "ran once: {}", rs[0]);
    }
    eprintln!("accepted {n} jobs before SIGKILL; all present after restart, each ran exactly once");
    server.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_mid_run_is_retried_on_another_worker_and_shows_dead() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/kill.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = serve(&db, port, &["--workers", "0", "--lease", "2s"]);
    wait_ready(&base).await;
    let marker = dir.path().join("attempts.log");
    let cmd = format!("echo started >> {}; sleep 1.5; echo done", marker.display());
    let (st, job) = post(&base, "/v1/jobs", json!({"handler": "shell", "payload": {"command": cmd}})).await;
    assert_eq!(st, 201);
    let job_id = job["id"].as_str().unwrap().to_string();

    let mut a = worker(&base, &["--enable-shell", "--name", "victim", "--capacity", "1"]);
    let running = wait_for(&base, &format!("/v1/runs?job_id={job_id}"), "run to start on A", 20, |v| {
        v["items"][0]["state"] == "running"
    })
    .await;
    // Killed only once the command itself has begun (the run is `running` a moment earlier).
    let marker_ref = &marker;
    eventually("the first execution to begin", Duration::from_secs(20), move || async move {
        std::fs::read_to_string(marker_ref).is_ok_and(|m| m.lines().count() == 1).then_some(())
    })
    .await;
    let victim_id = running["items"][0]["worker_id"].as_str().unwrap().to_string();
    a.kill9();
    let killed_at = Instant::now();
    let _b = worker(&base, &["--enable-shell", "--name", "rescuer", "--capacity", "1"]);
    wait_for(&base, &format!("/v1/runs?job_id={job_id}"), "attempt 2 to start", 30, |v| v["items"][0]["attempt"] == 2)
        .await;
    eprintln!("attempt 2 started {:?} after the SIGKILL (lease 2s, initial retry delay 1s)", killed_at.elapsed());
    let done = wait_for(&base, &format!("/v1/runs?job_id={job_id}"), "retry to succeed on B", 30, |v| {
        v["items"][0]["state"] == "succeeded"
    })
    .await;
    let run = &done["items"][0];
    assert_eq!(run["attempt"], 2, "the killed attempt plus one: {run}");
    assert_ne!(run["worker_id"], victim_id.as_str());
    assert_eq!(run["output"]["stdout"], "done\n");
    let started = std::fs::read_to_string(&marker).unwrap().lines().count();
    assert_eq!(started, 2, "executions: the killed one and the retry, no more");
    wait_for(&base, "/v1/workers", "victim to be dead", 20, |v| {
        v["items"].as_array().unwrap().iter().any(|w| w["id"] == victim_id.as_str() && w["state"] == "dead")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_workers_share_runs_and_the_python_example_completes_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/remote.db", dir.path().display());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = serve(&db, port, &["--workers", "0"]);
    wait_ready(&base).await;
    let _w1 = worker(&base, &["--name", "w1", "--handlers", "echo"]);
    let _w2 = worker(&base, &["--name", "w2", "--handlers", "echo"]);
    let py = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python-worker/worker.py");
    let mut python = Command::new("python3")
        .arg(&py)
        .args(["--server", &base, "--handler", "py-echo", "--once", "3"])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3");
    for i in 0..40 {
        post(&base, "/v1/jobs", json!({"handler": "echo", "payload": {"i": i}})).await;
    }
    for i in 0..3 {
        post(&base, "/v1/jobs", json!({"handler": "py-echo", "payload": {"i": i}})).await;
    }
    let runs = wait_for(&base, "/v1/runs?state=succeeded&limit=1000", "43 runs to succeed", 60, |v| {
        v["items"].as_array().unwrap().len() == 43
    })
    .await;
    let items = runs["items"].as_array().unwrap();
    let py_runs: Vec<_> = items.iter().filter(|r| r["handler"] == "py-echo").collect();
    assert_eq!(py_runs.len(), 3);
    for r in &py_runs {
        assert_eq!(r["output"]["by"], "python", "{r}");
    }
    let echo_workers: std::collections::HashSet<_> =
        items.iter().filter(|r| r["handler"] == "echo").map(|r| r["worker_id"].as_str().unwrap()).collect();
    assert_eq!(echo_workers.len(), 2, "both remote workers took runs");
    let status = python.wait().unwrap();
    assert!(status.success(), "python worker exited {status}");
}

#[test]
fn cron_next_needs_no_server_and_prints_times_with_the_zone_offset() {
    let out = Command::new(BIN)
        .args(["cron", "next", "0 9 * * *", "--timezone", "Europe/Berlin", "-n", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    for l in lines {
        let t = chrono::DateTime::parse_from_rfc3339(l).unwrap();
        assert_eq!(t.format("%H:%M").to_string(), "09:00");
        assert!(l.ends_with("+01:00") || l.ends_with("+02:00"), "{l}");
    }
    let bad = Command::new(BIN).args(["cron", "next", "nope"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expr"));
}
