//! Operating a real `sundial serve` process: the metrics the README documents, logs, and
//! shutdown on SIGTERM.

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"handler": "echo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs: Value = http.get(format!("{base}/v1/runs?job_id={id}")).send().await.unwrap().json().await.unwrap();
        if runs["items"][0]["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "run did not succeed: {runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
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
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Logged { proc: Proc(child), lines }
    }

    /// Waits (bounded) for a log line that `pred` accepts.
    async fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| pred(l)) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no log line {what}:\n{}", self.lines.lock().unwrap().join("\n"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    let http = reqwest::Client::new();
    let w: Value = http
        .post(format!("{base}/v1/workers"))
        .json(&json!({"name": "doomed", "handlers": ["echo"], "capacity": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wid = w["id"].as_str().unwrap();
    http.post(format!("{base}/v1/jobs")).json(&json!({"handler": "echo"})).send().await.unwrap();
    let claim: Value = http
        .post(format!("{base}/v1/workers/{wid}/claim"))
        .json(&json!({"max": 1, "wait": "5s"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run_id = claim["runs"][0]["run_id"].as_str().expect("claimed a run").to_string();

    let expired =
        server.wait_line("about the expired lease", |l| l.contains("lease expired") && l.contains(&run_id)).await;
    let v: Value = serde_json::from_str(&expired).expect("a JSON log line");
    assert_eq!(v["run_id"], run_id.as_str(), "{v}");
    server.wait_line("about the dead worker", |l| l.contains("declared dead") && l.contains(wid)).await;
    for l in server.lines.lock().unwrap().iter() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "--log-format json writes only JSON lines: {l}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_running_run_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let db = format!("sqlite://{}/t.db", dir.path().display());
    let mut server = Logged::serve(&db, port, &["--workers", "1", "--enable-shell"]);
    wait_ready(&base).await;
    let started = dir.path().join("started");
    let command = format!("touch {}; sleep 2; echo done", started.display());
    let job: Value = reqwest::Client::new()
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"handler": "shell", "payload": {"command": command}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the shell run never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = server.proc.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(s) = server.proc.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "serve did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "serve exits 0 on SIGTERM: {status}");

    // The run finished inside the draining process, before it exited.
    let _again = serve(&db, port, &["--workers", "0"]);
    wait_ready(&base).await;
    let runs: Value = reqwest::get(format!("{base}/v1/runs?job_id={}", job["id"].as_str().unwrap()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
