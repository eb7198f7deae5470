//! The dashboard in a real browser: headless Chromium loads `/`, runs its script against the
//! live API, and the rendered DOM shows the job, its run state and the worker.

use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

mod support;
use sundial_core::testing::eventually;
use support::*;

fn chromium() -> String {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new("which").arg(b).output().map(|o| o.status.success()).unwrap_or(false))
        .expect("a Chromium browser on PATH (scripts/test.sh installs Debian's chromium)")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_renders_jobs_runs_and_workers_in_a_real_browser() {
    let browser = chromium();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = serve(&format!("sqlite://{}/dash.db", dir.path().display()), port, &["--workers", "1"]);
    wait_ready(&base).await;
    let http = reqwest::Client::new();
    let job: Value = http
        .post(format!("{base}/v1/jobs"))
        .json(&json!({"name": "dash-probe", "handler": "echo", "payload": {"x": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap();
    let (http_ref, base_ref) = (&http, &base);
    eventually("the run to succeed", Duration::from_secs(30), move || async move {
        let runs: Value =
            http_ref.get(format!("{base_ref}/v1/runs?job_id={id}")).send().await.unwrap().json().await.unwrap();
        (runs["items"][0]["state"] == "succeeded").then_some(())
    })
    .await;

    let profile = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.path().display()),
                // Lets the page's fetches and timers run before the DOM is dumped.
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("{base}/"),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<td>dash-probe</td>"), "job row missing from the rendered page:\n{dom}");
    assert!(dom.contains("state-succeeded"), "run state missing:\n{dom}");
    assert!(dom.contains("in-process"), "worker row missing:\n{dom}");
}
