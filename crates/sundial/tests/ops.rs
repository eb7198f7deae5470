//! Operating a real `sundial serve` process: the metrics the README documents, logs, and
//! shutdown on SIGTERM.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use sundial_core::testing::eventually;

mod support;
use support::*;

/// `(name, type)` of every row of the README's metrics table.
fn readme_metrics() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let rows: Vec<(String, String)> = readme
        .lines()
        .filter(|l| l.starts_with("| `sundial_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect();
    assert!(rows.len() >= 13, "the README's metrics table was not found: {rows:?}");
    rows
}

async fn scrape(base: &str) -> String {
    reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap()
}

/// The value of the sample line `series` (name with labels, as rendered), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread")]
async fn fresh_server_exposes_every_metric_the_readme_lists_and_counts_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = serve(&format!("sqlite://{}/m.db", dir.path().display()), port, &["--workers", "1"]);
    wait_ready(&base).await;

    let text = scrape(&base).await;
    for (name, kind) in readme_metrics() {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}: no # HELP on a fresh server:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: no # TYPE {kind} on a fresh server:\n{text}"
        );
    }
    for unlabelled in ["sundial_leases_expired_total", "sundial_completions_stale_total", "sundial_store_errors_total"]
    {
        assert_eq!(sample(&text, unlabelled), Some(0.0), "{unlabelled} reads 0 from start:\n{text}");
    }

    // One run that succeeds: lag, duration, finished and the HTTP route show up with labels.
    let job = post_json(&base, "/v1/jobs", &json!({"handler": "echo"})).await;
    wait_job_run(&base, job["id"].as_str().unwrap(), "succeeded").await;
    let text = scrape(&base).await;
    assert_eq!(sample(&text, r#"sundial_run_start_lag_seconds_count{handler="echo"}"#), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, r#"sundial_run_duration_seconds_count{handler="echo",state="succeeded"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, r#"sundial_runs_finished_total{handler="echo",state="succeeded"}"#), Some(1.0), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with(r#"sundial_http_requests_total{route="/v1/jobs",status="201"}"#)),
        "the POST is counted under its route:\n{text}"
    );
    assert!(
        text.contains(r#"sundial_http_request_duration_seconds_bucket{route="/v1/runs",le="#),
        "request durations are a histogram per route:\n{text}"
    );
    assert_eq!(sample(&text, r#"sundial_workers{state="active"}"#), Some(1.0), "the in-process pool:\n{text}");
}

/// A `sundial serve` child whose stderr lines are collected as they come.
struct Logged {
    proc: Proc,
    lines: Lines,
}

impl Logged {
    fn serve(db: &str, port: u16, extra: &[&str]) -> Logged {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db", db])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Lines::collect(child.stderr.take().unwrap());
        Logged { proc: Proc(child), lines }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_name_the_run_of_an_expired_lease_and_the_dead_worker() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/l.db", dir.path().display());
    let server = Logged::serve(&db, port, &["--workers", "0", "--lease", "1s", "--log-format", "json"]);
    wait_ready(&base).await;

    // A worker that claims a run and then goes silent, as a crashed process would.
    let w = post_json(&base, "/v1/workers", &json!({"name": "doomed", "handlers": ["echo"], "capacity": 1})).await;
    let wid = w["id"].as_str().unwrap();
    post_json(&base, "/v1/jobs", &json!({"handler": "echo"})).await;
    let claim = post_json(&base, &format!("/v1/workers/{wid}/claim"), &json!({"max": 1, "wait": "5s"})).await;
    let run_id = claim["runs"][0]["run_id"].as_str().expect("claimed a run").to_string();

    let expired =
        server.lines.wait_for("about the expired lease", |l| l.contains("lease expired") && l.contains(&run_id)).await;
    let v: Value = serde_json::from_str(&expired).expect("a JSON log line");
    assert_eq!(v["run_id"], run_id.as_str(), "{v}");
    server.lines.wait_for("about the dead worker", |l| l.contains("declared dead") && l.contains(wid)).await;
    for l in server.lines.all().iter() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "--log-format json writes only JSON lines: {l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_run_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let server = Logged::serve(&db, port, &["--workers", "1", "--enable-shell"]);
    wait_ready(&base).await;
    let started = dir.path().join("started");
    let command = format!("touch {}; sleep 2; echo done", started.display());
    let job = post_json(&base, "/v1/jobs", &json!({"handler": "shell", "payload": {"command": command}})).await;
    eventually("the shell run to start", Duration::from_secs(30), || async { started.exists().then_some(()) }).await;

    let pid = server.proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait_exit(server.proc, Duration::from_secs(40)).await;
    assert!(status.success(), "serve exits 0 on SIGTERM: {status}");

    // The run finished inside the draining process, before it exited.
    let _again = serve(&db, port, &["--workers", "0"]);
    wait_ready(&base).await;
    let runs = get_json(&base, &format!("/v1/runs?job_id={}", job["id"].as_str().unwrap())).await;
    assert_eq!(runs["items"][0]["state"], "succeeded", "{runs}");
    assert_eq!(runs["items"][0]["output"]["stdout"], "done\n", "{runs}");
}

#[test]
fn serve_on_a_port_in_use_names_the_port() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--workers", "0", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--db", &format!("sqlite://{}/p.db", dir.path().display())])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("port {port} is already in use")), "{stderr}");
}
