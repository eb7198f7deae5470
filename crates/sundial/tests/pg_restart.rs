//! PostgreSQL itself restarting under a node: `/readyz` answers 503 while it is down,
//! submissions get 503 (never a false 2xx), and after it returns the node reconnects by itself
//! and every accepted job is there and runs.
//!
//! The test owns a throwaway PostgreSQL cluster (initdb on a private port), so stopping it
//! disturbs no other test.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;
use sundial_core::testing::eventually;
use support::*;

fn pg_bin(name: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir("/usr/lib/postgresql").ok()?.filter_map(|e| e.ok()).map(|e| e.path()).max()?;
    let p = dir.join("bin").join(name);
    p.exists().then_some(p)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(tool: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(tool);
        c
    } else {
        Command::new(tool)
    };
    cmd.args(args).output().expect("run postgres tool")
}

fn is_root() -> bool {
    std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

struct Cluster {
    dir: PathBuf,
    port: u16,
    pg_ctl: PathBuf,
}

impl Cluster {
    fn create() -> Option<Cluster> {
        let initdb = pg_bin("initdb")?;
        let pg_ctl = pg_bin("pg_ctl")?;
        let dir = std::env::temp_dir().join(format!("sundial-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            Command::new("chown").args(["postgres:postgres", dir.to_str().unwrap()]).status().unwrap();
        }
        let data = dir.join("data");
        let out = as_postgres(&initdb, &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let c = Cluster { dir, port, pg_ctl };
        c.start();
        Some(c)
    }
    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_string()
    }
    fn start(&self) {
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.display());
        let log = self.dir.join("log").to_str().unwrap().to_string();
        let out = as_postgres(&self.pg_ctl, &["-D", &self.data(), "-o", &opts, "-l", &log, "-w", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }
    fn stop(&self) {
        let out = as_postgres(&self.pg_ctl, &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.pg_ctl, &["-D", &self.data(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Waits until `GET url` answers `want`.
async fn until_status(what: &str, secs: u64, http: &reqwest::Client, url: &str, want: u16) {
    eventually(what, Duration::from_secs(secs), move || async move { (status(http, url).await == want).then_some(()) })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_survives_postgres_restart_and_readyz_reports_it() {
    let Some(pg) = Cluster::create() else {
        panic!("PostgreSQL server binaries not found under /usr/lib/postgresql");
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _node = serve(&pg.url(), port, &["--workers", "2"]);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let readyz = format!("{base}/readyz");
    until_status("node ready", 60, &http, &readyz, 200).await;

    let mut accepted = Vec::new();
    for i in 0..20 {
        let r = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"handler": "echo", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        accepted.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }

    pg.stop();
    until_status("readyz 503 while PostgreSQL is down", 30, &http, &readyz, 503).await;
    assert_eq!(status(&http, &format!("{base}/healthz")).await, 200, "the process itself is up");
    let r = http.post(format!("{base}/v1/jobs")).json(&json!({"handler": "echo"})).send().await.unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(code, 503, "no false 2xx while the store is down: {body}");
    assert_eq!(body["error"]["code"], "store_unavailable");

    pg.start();
    until_status("readyz 200 after PostgreSQL returns", 60, &http, &readyz, 200).await;
    for i in 20..30 {
        let r = http
            .post(format!("{base}/v1/jobs"))
            .json(&json!({"handler": "echo", "payload": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "submissions work again");
        accepted.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }
    for id in &accepted {
        let url = format!("{base}/v1/runs?job_id={id}");
        let (http, url) = (&http, url.as_str());
        eventually(&format!("job {id} to run"), Duration::from_secs(60), move || async move {
            let v: Value = match http.get(url).send().await {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => return None,
            };
            (v["items"][0]["state"] == "succeeded").then_some(())
        })
        .await;
    }
}
