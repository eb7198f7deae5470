//! Child-process scaffolding shared by the process-level tests: `sundial serve` and
//! `sundial worker` children that die with the test, free ports, and a bounded readiness wait.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;
use sundial_core::testing::eventually;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sundial");

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process, SIGKILLed when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// SIGKILL: no drain, no cleanup — a crash.
    pub fn kill9(&mut self) {
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
pub fn sundial(args: &[&str]) -> Proc {
    Proc(Command::new(BIN).args(args).env("RUST_LOG", "warn").stdout(Stdio::null()).spawn().unwrap())
}

/// `sundial serve` on `port` over `db` (given as `SUNDIAL_DB`, so the environment form of the
/// flags is exercised too), with extra flags.
pub fn serve(db: &str, port: u16, extra: &[&str]) -> Proc {
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
pub fn worker(server: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["worker", "--server", server];
    args.extend_from_slice(extra);
    sundial(&args)
}

/// Waits (bounded) until `GET {base}/readyz` answers 200.
pub async fn wait_ready(base: &str) {
    let what = format!("server at {base} to be ready");
    eventually(&what, Duration::from_secs(60), move || async move {
        let status = reqwest::get(format!("{base}/readyz")).await.map(|r| r.status().as_u16()).unwrap_or(0);
        (status == 200).then_some(())
    })
    .await;
}
