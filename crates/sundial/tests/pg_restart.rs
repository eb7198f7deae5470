//! PostgreSQL itself restarting under a node: `/readyz` answers 503 while it is down,
//! submissions get 503 (never a false 2xx), and after it returns the node reconnects by itself
//! and every accepted job is there and runs.
//!
//! The test owns a throwaway PostgreSQL cluster (initdb on a private port), so stopping it
//! disturbs no other test.

use serde_json::{json, Value};
use std::time::Duration;

#[path = "../src/cli/bench/cluster.rs"]
mod cluster;
mod support;
use cluster::Cluster;
use sundial_core::testing::eventually;
use support::*;

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
    let pg = Cluster::create().expect("a private PostgreSQL cluster");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _node = serve(&pg.url("postgres"), port, &["--workers", "2"]);
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

    pg.stop().expect("stop PostgreSQL");
    until_status("readyz 503 while PostgreSQL is down", 30, &http, &readyz, 503).await;
    assert_eq!(status(&http, &format!("{base}/healthz")).await, 200, "the process itself is up");
    let r = http.post(format!("{base}/v1/jobs")).json(&json!({"handler": "echo"})).send().await.unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(code, 503, "no false 2xx while the store is down: {body}");
    assert_eq!(body["error"]["code"], "store_unavailable");

    pg.start().expect("start PostgreSQL again");
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
