//! Issue 11's reproduction with a real restart, on SQLite and on PostgreSQL: `serve
//! --misfire-threshold 2s`, a per-second cron job with `misfire: fire_once`, SIGKILL the server,
//! stay down for several seconds, start it again on the same database. Exactly one run carries a
//! reason counting the missed times, that count is exactly the due times between the last run
//! before the crash and that run, and the reason survives the run's claim and completion.
//!
//! The downtime is real time; the assertions are on recorded state only (the runs and their
//! `fire_time`s), never on how long anything took.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

mod support;
use sundial_core::testing::eventually;
use support::*;

const MISFIRE_PREFIX: &str = "misfired: fired once for ";

async fn get(base: &str, path: &str) -> Value {
    reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap()
}

async fn runs_of(base: &str, job_id: &str) -> Vec<Value> {
    let page = get(base, &format!("/v1/runs?job_id={job_id}&limit=1000")).await;
    page["items"].as_array().unwrap().clone()
}

fn fire_time(run: &Value) -> DateTime<Utc> {
    run["fire_time"].as_str().unwrap().parse().unwrap()
}

/// The number of missed times a misfire reason counts (`misfired: fired once for N missed …`).
fn missed_count(reason: &str) -> Option<i64> {
    reason.strip_prefix(MISFIRE_PREFIX)?.split(' ').next()?.parse().ok()
}

async fn crash_and_restart_records_the_misfire(db: &str) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let flags = ["--misfire-threshold", "2s"];
    let mut server = serve(db, port, &flags);
    wait_ready(&base).await;
    let job = json!({
        "handler": "echo",
        "triggers": [{"kind": "cron", "expr": "* * * * * *", "misfire": "fire_once"}],
    });
    let r = reqwest::Client::new().post(format!("{base}/v1/jobs")).json(&job).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let job_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    // Running normally: a couple of on-time runs exist before the crash.
    eventually("two on-time runs before the crash", Duration::from_secs(60), || async {
        (runs_of(&base, &job_id).await.len() >= 2).then_some(())
    })
    .await;
    server.kill9();
    // Down for well over the 2 s threshold, so several due times are missed.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let _server = serve(db, port, &flags);
    wait_ready(&base).await;

    let noted = eventually("the catch-up run, claimed and completed", Duration::from_secs(60), || async {
        let runs = runs_of(&base, &job_id).await;
        let noted: Vec<Value> =
            runs.into_iter().filter(|r| r["reason"].as_str().is_some_and(|s| s.starts_with(MISFIRE_PREFIX))).collect();
        noted.iter().any(|r| r["state"] == "succeeded").then_some(noted)
    })
    .await;
    assert_eq!(noted.len(), 1, "exactly one run summarises the downtime: {noted:#?}");
    let run = &noted[0];
    let reason = run["reason"].as_str().unwrap();
    let missed = missed_count(reason).unwrap_or_else(|| panic!("a count in {reason:?}"));
    assert!(missed >= 3, "a 7 s outage with a 2 s threshold misses several times: {reason}");
    assert_eq!(run["attempt"], 1, "claimed once, completed once: {run}");

    // Every due time is accounted for: the missed ones are exactly the seconds after the last
    // run before the crash, up to and including the noted run's fire time; none of them ran.
    let t = fire_time(run);
    let runs = runs_of(&base, &job_id).await;
    let before = runs.iter().map(fire_time).filter(|f| *f < t).max().expect("runs before the crash");
    assert_eq!((t - before).num_seconds(), missed, "the count covers every second since {before}: {reason}");
    let mut times: Vec<DateTime<Utc>> = runs.iter().map(fire_time).collect();
    times.sort();
    let n = times.len();
    times.dedup();
    assert_eq!(times.len(), n, "one run per due time");
    // The restarted process counted every missed time in its misfire metric.
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    let series = "sundial_trigger_misfires_total{policy=\"fire_once\"} ";
    let counted = metrics.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.parse::<f64>().ok());
    assert_eq!(counted, Some(missed as f64), "the metric counts every missed time:\n{metrics}");
    // The reason is the note alone after a successful claim and completion.
    let again = get(&base, &format!("/v1/runs/{}", run["id"].as_str().unwrap())).await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["reason"].as_str(), Some(reason), "the note outlives the claim and the completion");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_restart_after_sigkill_records_one_misfire_run_that_keeps_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/misfire.db", dir.path().display());
    crash_and_restart_records_the_misfire(&db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restart_after_sigkill_records_one_misfire_run_that_keeps_its_reason() {
    let pg = std::env::var("SUNDIAL_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/sundial_test".into());
    let server = pg.rsplit_once('/').unwrap().0.to_string();
    let name = format!("sundial_misfire_{}_{}", std::process::id(), rand::random::<u32>());
    let psql = |url: &str, sql: &str| {
        let out = Command::new("psql").args([url, "-qtAc", sql]).output().expect("psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    psql(&format!("{server}/postgres"), &format!("CREATE DATABASE {name}"));
    crash_and_restart_records_the_misfire(&format!("{server}/{name}")).await;
    psql(&format!("{server}/postgres"), &format!("DROP DATABASE {name} WITH (FORCE)"));
}
