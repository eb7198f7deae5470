//! `limits`: flow control's cost. A hot key with 10,000 due runs and `max_running` 1 is stored
//! first, then N due runs spread over 1,000 keys under the pattern `k:*` with `max_running` 2;
//! the server's in-process pool drains them. Reported: the throughput of the N (timed like
//! `execute`, from the server's ready line to the last of them finishing), how many of the hot
//! key's runs ran meanwhile, and the check that no key ever had more runs running at once than
//! its limit (from every finished run's `[started_at, finished_at)`).

use super::api::ms_between;
use super::procs::ServerProc;
use super::report::Report;
use super::{progress, Ctx};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use sundial_core::domain::{LimitBounds, LimitKey};

const HOT: u64 = 10_000;
const KEYS: u64 = 1_000;

#[derive(Deserialize)]
struct Run {
    state: String,
    limits: Vec<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Page {
    items: Vec<Run>,
    next_cursor: Option<String>,
}

/// Runs the scenario.
pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.args.n;
    report.set("n", n);
    report.set("keys", KEYS);
    report.set("hot_runs", HOT);
    report.set("workers", ctx.args.workers);
    ctx.db.fresh().await?;
    let store = sundial_core::store::open(&ctx.db.url()).await.context("opening the store")?;
    let now = Utc::now();
    let bounds = |m| LimitBounds { max_running: Some(m), rate: None };
    store.limit_put(&LimitKey::parse("k:*").expect("pattern"), bounds(2), now).await?;
    store.limit_put(&LimitKey::parse("hot").expect("key"), bounds(1), now).await?;
    drop(store);
    let pb = progress(HOT + n, "limits: storing");
    ctx.db
        .insert(HOT, false, &pb, |_| serde_json::json!({"handler": "echo", "namespace": "hot", "limits": ["hot"]}))
        .await?;
    ctx.db
        .insert(
            n,
            false,
            &pb,
            |i| serde_json::json!({"handler": "echo", "namespace": "rest", "limits": [format!("k:{}", i % KEYS)]}),
        )
        .await?;
    pb.finish_and_clear();
    ctx.db.settle().await;

    let server = ServerProc::start(&ctx.db.url(), ctx.args.workers).await?;
    let t0 = server.ready_at;
    let result = server.explain(measure(ctx, &server, n).await);
    report.note_log("server", server.problems());
    server.stop().await?;
    let (rest, hot) = result?;

    let last = rest.iter().filter_map(|r| r.finished_at).max().unwrap_or(t0);
    report.set_f("jobs_per_s", n as f64 / (ms_between(t0, last) / 1000.0), 0);
    let hot_done = hot.iter().filter(|r| r.finished_at.is_some_and(|f| f <= last)).count();
    report.set("hot_runs_done_meanwhile", hot_done);
    for (what, runs, max) in [("k:*", &rest, 2), ("hot", &hot, 1)] {
        if let Some((key, seen)) = over_limit(runs, max) {
            report.fail(format!("{what}: key {key} had {seen} runs running at once (max_running {max})"));
        }
    }
    Ok(())
}

/// Waits for the N runs of namespace `rest` to finish; returns them and the hot key's runs.
async fn measure(ctx: &Ctx, server: &ServerProc, n: u64) -> anyhow::Result<(Vec<Run>, Vec<Run>)> {
    let pb = progress(n, "limits");
    let started = Instant::now();
    loop {
        let open = list(ctx, &server.base, "rest", Some("pending"), true).await?.len()
            + list(ctx, &server.base, "rest", Some("running"), true).await?.len();
        if open == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the {n} runs did not finish in 10 minutes");
        }
        tokio::time::sleep(super::execute::poll_interval(n)).await;
    }
    pb.finish_and_clear();
    let rest = list(ctx, &server.base, "rest", None, false).await?;
    if let Some(bad) = rest.iter().find(|r| r.state != "succeeded") {
        bail!("a run ended {}", bad.state);
    }
    anyhow::ensure!(rest.len() as u64 == n, "{} runs stored, {n} expected", rest.len());
    let hot = list(ctx, &server.base, "hot", None, false).await?;
    Ok((rest, hot))
}

async fn list(ctx: &Ctx, base: &str, ns: &str, state: Option<&str>, one: bool) -> anyhow::Result<Vec<Run>> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let limit = if one { "1" } else { "1000" };
        let mut req = ctx.http.get(format!("{base}/v1/runs")).query(&[("namespace", ns), ("limit", limit)]);
        if let Some(s) = state {
            req = req.query(&[("state", s)]);
        }
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let page: Page = req.send().await?.error_for_status()?.json().await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) if !one => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

/// The first key whose runs overlapped more than `max` at some instant, with that overlap.
fn over_limit(runs: &[Run], max: usize) -> Option<(String, usize)> {
    let mut by_key: HashMap<&str, Vec<(DateTime<Utc>, i32)>> = HashMap::new();
    for r in runs {
        let (Some(s), Some(f)) = (r.started_at, r.finished_at) else { continue };
        for k in &r.limits {
            let e = by_key.entry(k.as_str()).or_default();
            e.push((s, 1));
            e.push((f, -1));
        }
    }
    for (k, mut events) in by_key {
        // Ends sort before starts at the same instant: [start, finish) intervals.
        events.sort();
        let mut open = 0i32;
        for (_, d) in events {
            open += d;
            if open as usize > max {
                return Some((k.to_string(), open as usize));
            }
        }
    }
    None
}
