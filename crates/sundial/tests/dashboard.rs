//! The dashboard in a real browser: headless Chromium loads `/`, runs its script against the
//! live API, and the rendered DOM shows the job, its run state and the worker.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_sundial");

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Proc(
        Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
            .args(["--db", &format!("sqlite://{}/dash.db", dir.path().display())])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
    loop {
        let runs: Value = http.get(format!("{base}/v1/runs?job_id={id}")).send().await.unwrap().json().await.unwrap();
        if runs["items"][0]["state"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "run did not succeed: {runs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

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
