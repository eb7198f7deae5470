//! Child-process scaffolding shared by the process-level tests: `sundial serve` and
//! `sundial worker` children that die with the test, free ports, and a bounded readiness wait.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sundial_core::testing::eventually;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sundial");

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, SIGKILLed when dropped.
pub(crate) struct Proc(pub Child);

impl Proc {
    /// SIGKILL: no drain, no cleanup — a crash.
    pub(crate) fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `sundial <args>` with quiet logs and stdout discarded.
pub(crate) fn sundial(args: &[&str]) -> Proc {
    Proc(Command::new(BIN).args(args).env("RUST_LOG", "warn").stdout(Stdio::null()).spawn().unwrap())
}

/// `sundial serve` on `port` over `db` (given as `SUNDIAL_DB`, so the environment form of the
/// flags is exercised too), with extra flags.
pub(crate) fn serve(db: &str, port: u16, extra: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("SUNDIAL_DB", db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// `sundial worker` against `server`, with extra flags.
pub(crate) fn worker(server: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--server", server];
    args.extend_from_slice(extra);
    sundial(&args)
}

/// Waits (bounded) until `GET {base}/readyz` answers 200.
pub(crate) async fn wait_ready(base: &str) {
    let what = format!("server at {base} to be ready");
    eventually(&what, Duration::from_secs(60), move || async move {
        let status = reqwest::get(format!("{base}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0);
        (status == 200).then_some(())
    })
    .await;
}

/// `POST {base}{path}` with a JSON body; the JSON answer, whatever its status.
pub(crate) async fn post_json(base: &str, path: &str, body: &serde_json::Value) -> serde_json::Value {
    let r = reqwest::Client::new().post(format!("{base}{path}")).json(body).send().await.unwrap();
    r.json().await.unwrap()
}

/// `GET {base}{path}`; the JSON answer, whatever its status.
pub(crate) async fn get_json(base: &str, path: &str) -> serde_json::Value {
    reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap()
}

/// Waits (bounded) until run `id` is in `state`; returns the run.
pub(crate) async fn wait_run(base: &str, id: &str, state: &str) -> serde_json::Value {
    let what = format!("run {id} to be {state}");
    eventually(&what, Duration::from_secs(30), || async {
        let r = get_json(base, &format!("/v1/runs/{id}")).await;
        (r["state"] == state).then_some(r)
    })
    .await
}

/// Waits (bounded) until job `job_id`'s newest run is in `state`; returns the run.
pub(crate) async fn wait_job_run(base: &str, job_id: &str, state: &str) -> serde_json::Value {
    let what = format!("a run of job {job_id} to be {state}");
    eventually(&what, Duration::from_secs(30), || async {
        let runs = get_json(base, &format!("/v1/runs?job_id={job_id}")).await;
        (runs["items"][0]["state"] == state).then(|| runs["items"][0].clone())
    })
    .await
}

/// The lines a child writes to one of its pipes, collected as they come by a reader thread.
#[derive(Clone, Default)]
pub(crate) struct Lines(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Lines {
    /// Starts collecting from `pipe` (a child's `stdout` or `stderr`, taken from it).
    pub(crate) fn collect(pipe: impl std::io::Read + Send + 'static) -> Lines {
        let lines = Lines::default();
        let sink = lines.0.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        lines
    }

    /// Everything collected so far.
    pub(crate) fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) for a line that `pred` accepts; returns it.
    pub(crate) async fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let what = format!("a line {what}");
        eventually(&what, Duration::from_secs(30), || async { self.all().into_iter().find(|l| pred(l)) }).await
    }
}

/// Waits (bounded, off the async runtime) for `proc` to exit on its own; its exit status.
pub(crate) async fn wait_exit(mut proc: Proc, timeout: Duration) -> std::process::ExitStatus {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(s) = proc.0.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "the process did not exit within {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
}
