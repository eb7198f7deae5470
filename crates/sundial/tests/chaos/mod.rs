//! The cluster chaos driver: N `sundial serve` nodes on one PostgreSQL database and M remote
//! `sundial worker` processes; many per-second cron triggers plus a stream of one-time jobs;
//! every few seconds a random node or worker is killed with SIGKILL and restarted. At the end
//! it drains, then checks and prints: accepted jobs, runs expected vs found, runs lost (must be
//! 0), trigger fires duplicated (must be 0), completions rejected as stale, max due→start lag.
//!
//! Used by `tests/cluster.rs` (CI, ~60 s) and `examples/cluster_chaos.rs` (`--duration`).
#![allow(dead_code)]

use rand::Rng;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sundial_core::testing::eventually;

/// Driver settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The `sundial` binary.
    pub bin: PathBuf,
    /// Admin URL of the PostgreSQL server (database `postgres`).
    pub pg_admin_url: String,
    /// How long the chaos phase lasts.
    pub duration: Duration,
    /// `serve` nodes.
    pub nodes: usize,
    /// `worker` processes.
    pub workers: usize,
    /// Cron triggers firing every second.
    pub cron_triggers: usize,
    /// One-time jobs submitted per second.
    pub jobs_per_s: u32,
    /// Mean time between kills.
    pub kill_every: Duration,
    /// Flow control under chaos: when set, the one-time jobs name limit keys and take a while.
    pub limits: Option<LimitChaos>,
}

impl Config {
    /// The cluster both chaos tests run: 3 nodes and 2 workers of the binary `bin` on the
    /// PostgreSQL of `SUNDIAL_TEST_PG_URL`, a kill every 4 s on average, for `SUNDIAL_CHAOS_SECS`
    /// (else `default_secs`) seconds; the caller sets the load.
    #[allow(dead_code)] // the example builds its own
    pub(crate) fn cluster(bin: &str, default_secs: u64) -> Config {
        let pg = std::env::var("SUNDIAL_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/sundial_test".into());
        let secs = std::env::var("SUNDIAL_CHAOS_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_secs);
        Config {
            bin: bin.into(),
            pg_admin_url: format!("{}/postgres", pg.rsplit_once('/').unwrap().0),
            duration: Duration::from_secs(secs),
            nodes: 3,
            workers: 2,
            cron_triggers: 0,
            jobs_per_s: 0,
            kill_every: Duration::from_secs(4),
            limits: None,
        }
    }
}

/// One-time jobs name one of `keys` keys (`tenant:0`, …) governed by the pattern `tenant:*`
/// with `max_running`, and run `shell` `sleep` for `hold`, so runs of a key overlap unless the
/// limit keeps them apart.
#[derive(Debug, Clone)]
pub(crate) struct LimitChaos {
    /// Distinct keys.
    pub keys: usize,
    /// The pattern's `max_running`.
    pub max_running: u32,
    /// How long each run takes.
    pub hold: Duration,
}

/// What the run found.
#[derive(Debug, Default, Clone)]
pub(crate) struct Report {
    pub accepted_jobs: usize,
    pub cron_fires_expected: u64,
    pub cron_runs_found: u64,
    pub one_time_runs_found: u64,
    pub runs_lost: u64,
    pub fires_duplicated: u64,
    pub fire_gaps: u64,
    pub stale_completions: f64,
    pub kills: u64,
    pub max_lag_ms: f64,
    pub p99_lag_ms: f64,
    pub retried_runs: u64,
    /// Most runs of one limit key running at once, from every run's `[started_at, finished_at)`.
    pub limit_max_overlap: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "accepted one-time jobs     {}", self.accepted_jobs)?;
        writeln!(f, "one-time runs found        {}", self.one_time_runs_found)?;
        writeln!(f, "cron fires expected       {}", self.cron_fires_expected)?;
        writeln!(f, "cron runs found           {}", self.cron_runs_found)?;
        writeln!(f, "runs lost                 {}", self.runs_lost)?;
        writeln!(f, "trigger fires duplicated  {}", self.fires_duplicated)?;
        writeln!(f, "trigger fire gaps         {}", self.fire_gaps)?;
        writeln!(f, "completions stale (409)   {}", self.stale_completions)?;
        writeln!(f, "runs retried (attempt>1)  {}", self.retried_runs)?;
        writeln!(f, "processes killed          {}", self.kills)?;
        writeln!(f, "limit key max overlap     {}", self.limit_max_overlap)?;
        writeln!(f, "due→start lag p99 / max   {:.1} ms / {:.1} ms", self.p99_lag_ms, self.max_lag_ms)
    }
}

struct Proc {
    args: Vec<String>,
    child: Option<Child>,
    port: Option<u16>,
}

impl Proc {
    fn start(&mut self, bin: &PathBuf) {
        let child = Command::new(bin)
            .args(&self.args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sundial");
        self.child = Some(child);
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql").args([url, "-qtAc", sql]).output().expect("psql");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn ready(http: &reqwest::Client, base: &str) -> bool {
    matches!(http.get(format!("{base}/readyz")).send().await, Ok(r) if r.status().is_success())
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let what = format!("{base} to be ready");
    eventually(&what, Duration::from_secs(60), move || async move { ready(http, base).await.then_some(()) }).await;
}

async fn scrape_stale(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(r) = http.get(format!("{base}/metrics")).send().await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("sundial_completions_stale_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn all(http: &reqwest::Client, base: &str, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{base}{path}{sep}limit=1000&cursor={c}"),
            None => format!("{base}{path}{sep}limit=1000"),
        };
        let page: Value = http.get(url).send().await.unwrap().json().await.unwrap();
        out.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn ts(v: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?).ok().map(|t| t.with_timezone(&chrono::Utc))
}

/// Runs the scenario and returns what it found.
pub(crate) async fn run(cfg: Config) -> Report {
    let db = format!("sundial_chaos_{}_{}", std::process::id(), rand::random::<u32>());
    psql(&cfg.pg_admin_url, &format!("CREATE DATABASE {db}"));
    let db_url = format!("{}/{db}", cfg.pg_admin_url.rsplit_once('/').unwrap().0);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let mut nodes: Vec<Proc> = (0..cfg.nodes)
        .map(|_| {
            let port = free_port();
            Proc {
                args: [
                    "serve",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--db",
                    &db_url,
                    "--workers",
                    "0",
                    "--lease",
                    "3s",
                ]
                .map(String::from)
                .to_vec(),
                child: None,
                port: Some(port),
            }
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.port.unwrap())).collect();
    // The first node migrates; the others start once it is ready.
    nodes[0].start(&cfg.bin);
    wait_ready(&http, &bases[0]).await;
    for n in nodes.iter_mut().skip(1) {
        n.start(&cfg.bin);
    }
    for b in &bases {
        wait_ready(&http, b).await;
    }
    let mut workers: Vec<Proc> = (0..cfg.workers)
        .map(|i| {
            let mut args: Vec<String> = [
                "worker",
                "--server",
                &bases[i % bases.len()],
                "--handlers",
                if cfg.limits.is_some() { "echo,shell" } else { "echo" },
                "--capacity",
                "16",
                "--name",
                &format!("chaos-w{i}"),
            ]
            .map(String::from)
            .to_vec();
            if cfg.limits.is_some() {
                args.push("--enable-shell".into());
            }
            Proc { args, child: None, port: None }
        })
        .collect();
    if let Some(l) = &cfg.limits {
        let r = http
            .put(format!("{}/v1/limits/tenant:*", bases[0]))
            .json(&json!({"max_running": l.max_running}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "PUT /v1/limits/tenant:*");
    }
    for w in workers.iter_mut() {
        w.start(&cfg.bin);
    }

    // Cron triggers every second until the chaos phase ends (`end_at`), in batches.
    let setup_margin = Duration::from_secs(5 + cfg.cron_triggers as u64 / 100);
    let cron_end = chrono::Utc::now() + chrono::Duration::from_std(setup_margin + cfg.duration).unwrap();
    let mut cron_ids = Vec::new();
    for chunk in (0..cfg.cron_triggers).collect::<Vec<_>>().chunks(100) {
        let jobs: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"name": format!("cron-{i}"), "handler": "echo",
                    "triggers": [{"kind": "cron", "expr": "* * * * * *", "end_at": cron_end.to_rfc3339()}]})
            })
            .collect();
        let r: Value = http
            .post(format!("{}/v1/jobs/batch", bases[0]))
            .json(&json!({"jobs": jobs}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in r["items"].as_array().unwrap() {
            assert_eq!(item["status"], 201, "{item}");
            cron_ids.push(item["job"]["id"].as_str().unwrap().to_string());
        }
    }

    // One-time jobs, submitted to random nodes; only 2xx answers count as accepted.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let submitter = {
        let (http, bases, accepted, stop) = (http.clone(), bases.clone(), accepted.clone(), stop.clone());
        let limits = cfg.limits.clone();
        let gap = Duration::from_secs_f64(1.0 / cfg.jobs_per_s.max(1) as f64);
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                let base = &bases[rand::rng().random_range(0..bases.len())];
                let (http, accepted, base) = (http.clone(), accepted.clone(), base.clone());
                let body = match &limits {
                    None => json!({"handler": "echo", "payload": {"i": i}}),
                    Some(l) => json!({"handler": "shell",
                        "payload": {"command": format!("sleep {}", l.hold.as_secs_f64()), "i": i},
                        "limits": [format!("tenant:{}", i as usize % l.keys)]}),
                };
                tokio::spawn(async move {
                    let r = http.post(format!("{base}/v1/jobs")).json(&body).send().await;
                    if let Ok(r) = r {
                        if r.status().as_u16() == 201 {
                            if let Ok(v) = r.json::<Value>().await {
                                accepted.lock().unwrap().push(v["id"].as_str().unwrap_or_default().to_string());
                            }
                        }
                    }
                });
                i += 1;
                tokio::time::sleep(gap).await;
            }
        })
    };

    // Chaos: kill a random node or worker, restart it a moment later.
    let mut report = Report::default();
    let end = Instant::now() + (cron_end - chrono::Utc::now()).to_std().unwrap_or_default();
    while Instant::now() < end {
        let jitter = rand::rng().random_range(0.5..1.5);
        tokio::time::sleep(cfg.kill_every.mul_f64(jitter)).await;
        let pick = rand::rng().random_range(0..nodes.len() + workers.len());
        if pick < nodes.len() {
            report.stale_completions += scrape_stale(&http, &bases[pick]).await;
            nodes[pick].kill9();
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..1500))).await;
            nodes[pick].start(&cfg.bin);
            wait_ready(&http, &bases[pick]).await;
        } else {
            let w = &mut workers[pick - nodes.len()];
            w.kill9();
            tokio::time::sleep(Duration::from_millis(rand::rng().random_range(200..1500))).await;
            w.start(&cfg.bin);
        }
        report.kills += 1;
    }
    stop.cancel();
    let _ = submitter.await;
    tokio::time::sleep(Duration::from_millis(500)).await; // in-flight submissions answer

    // The cron triggers have ended; drain: nothing pending or running.
    let (http_ref, base0) = (&http, bases[0].as_str());
    eventually("the cluster to drain (nothing pending or running)", Duration::from_secs(120), move || async move {
        let p: Value =
            http_ref.get(format!("{base0}/v1/runs?state=pending&limit=1")).send().await.unwrap().json().await.unwrap();
        let r: Value =
            http_ref.get(format!("{base0}/v1/runs?state=running&limit=1")).send().await.unwrap().json().await.unwrap();
        (p["items"].as_array().unwrap().is_empty() && r["items"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    for b in &bases {
        report.stale_completions += scrape_stale(&http, b).await;
    }

    // Check.
    let accepted = accepted.lock().unwrap().clone();
    report.accepted_jobs = accepted.len();
    let runs = all(&http, &bases[0], "/v1/runs").await;
    let mut by_job: HashMap<&str, Vec<&Value>> = HashMap::new();
    let mut seen_fire: HashSet<(String, String)> = HashSet::new();
    let mut per_trigger: HashMap<String, Vec<chrono::DateTime<chrono::Utc>>> = HashMap::new();
    let mut lags = Vec::new();
    for r in &runs {
        by_job.entry(r["job_id"].as_str().unwrap()).or_default().push(r);
        if r["attempt"].as_u64().unwrap_or(0) > 1 {
            report.retried_runs += 1;
        }
        if let Some(t) = r["trigger_id"].as_str() {
            report.cron_runs_found += 1;
            // `fire_time` is the due time that made the run; retries move `scheduled_for`.
            let key = (t.to_string(), r["fire_time"].as_str().unwrap().to_string());
            if !seen_fire.insert(key) {
                report.fires_duplicated += 1;
            }
            per_trigger.entry(t.to_string()).or_default().push(ts(&r["fire_time"]).unwrap());
        }
        if r["state"] != "succeeded" {
            report.runs_lost += 1;
        } else if r["attempt"] == 1 {
            if let (Some(s), Some(d)) = (ts(&r["started_at"]), ts(&r["scheduled_for"])) {
                lags.push((s - d).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
        }
    }
    for id in &accepted {
        match by_job.get(id.as_str()) {
            Some(rs) if rs.len() == 1 => report.one_time_runs_found += 1,
            Some(rs) => report.fires_duplicated += rs.len() as u64 - 1,
            None => report.runs_lost += 1,
        }
    }
    for id in &cron_ids {
        let job: Value = http.get(format!("{}/v1/jobs/{id}", bases[0])).send().await.unwrap().json().await.unwrap();
        report.cron_fires_expected += job["triggers"][0]["fires"].as_u64().unwrap_or(0);
    }
    for times in per_trigger.values_mut() {
        times.sort();
        for w in times.windows(2) {
            if (w[1] - w[0]).num_milliseconds() != 1000 {
                if report.fire_gaps < 5 {
                    eprintln!("gap: {} -> {}", w[0], w[1]);
                }
                report.fire_gaps += 1;
            }
        }
    }
    report.limit_max_overlap = max_overlap_per_key(&runs);
    lags.sort_by(|a, b| a.total_cmp(b));
    report.max_lag_ms = lags.last().copied().unwrap_or(0.0);
    report.p99_lag_ms = lags.get(((lags.len() as f64) * 0.99) as usize).copied().unwrap_or(report.max_lag_ms);

    drop(workers);
    drop(nodes);
    psql(&cfg.pg_admin_url, &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    report
}

/// The most runs naming one key that were running at the same instant, over every key: each
/// run counts over `[started_at, finished_at)` of its last attempt (an attempt lost with a
/// killed worker ended before the next one started).
pub(crate) fn max_overlap_per_key(runs: &[Value]) -> usize {
    let mut by_key: HashMap<&str, Vec<(chrono::DateTime<chrono::Utc>, i32)>> = HashMap::new();
    for r in runs {
        let (Some(s), Some(f)) = (ts(&r["started_at"]), ts(&r["finished_at"])) else { continue };
        for k in r["limits"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let e = by_key.entry(k).or_default();
            e.push((s, 1));
            e.push((f, -1));
        }
    }
    let mut max = 0;
    for events in by_key.values_mut() {
        // An end sorts before a start at the same instant: the intervals are half-open.
        events.sort();
        let mut open = 0i32;
        for (_, d) in events.iter() {
            open += d;
            max = max.max(open.max(0) as usize);
        }
    }
    max
}
