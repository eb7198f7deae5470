//! `schedule`: M triggers stored before the server starts — M − K far in the future (nine in
//! ten `once` at spread-out times 30–41 days ahead, one in ten `interval` every 30 days), and K
//! `once` triggers all due at the same whole second, a few seconds after the server is up.
//! Measured: start lag `started_at − scheduled_for` of the K runs, the server's CPU use while
//! nothing is due, and its peak RSS.

use super::api::{check_runs, ms_between, Api, Expect, RunCounts};
use super::procs::ServerProc;
use super::report::{latency_summary, Report};
use super::{progress, Ctx};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Runs the scenario.
pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let m = ctx.args.triggers();
    let k = ctx.args.due();
    let far = m - k;
    report.set("n", k);
    report.set("triggers", m);
    report.set("due", k);
    report.set("workers", ctx.args.workers);
    ctx.db.fresh().await?;

    let pb = progress(m, "schedule: storing triggers");
    let started = Instant::now();
    let far_base = Utc::now() + TimeDelta::days(30);
    ctx.db
        .insert(far, false, &pb, |i| {
            if i % 10 == 0 {
                json!({"handler": "echo", "triggers": [{"kind": "interval", "every": "30days"}]})
            } else {
                let at = far_base + TimeDelta::seconds(i as i64);
                json!({"handler": "echo", "triggers": [{"kind": "once", "at": at.to_rfc3339()}]})
            }
        })
        .await?;
    // Due a few seconds after the K are stored and the server is up; on a whole second.
    let per_job_s = if far > 0 { started.elapsed().as_secs_f64() / far as f64 } else { 0.0001 };
    let lead = Duration::from_secs_f64(4.0 + 1.5 * per_job_s * k as f64);
    let due_at: DateTime<Utc> = (Utc::now() + lead).trunc_subsecs(0) + TimeDelta::seconds(1);
    let due_ids = ctx
        .db
        .insert(k, true, &pb, |_| json!({"handler": "echo", "triggers": [{"kind": "once", "at": due_at.to_rfc3339()}]}))
        .await?;
    pb.finish_and_clear();
    report.set_f("insert_jobs_per_s", m as f64 / started.elapsed().as_secs_f64(), 0);
    ctx.db.settle().await;

    let server = ServerProc::start(&ctx.db.url(), ctx.args.workers).await?;
    report.set_f("startup_ms", ms_between(server.spawned_at, server.ready_at), 1);
    let margin_ms = ms_between(server.ready_at, due_at);
    if margin_ms < 500.0 {
        report.set(
            "warning",
            format!("the server was ready only {margin_ms:.0} ms before the due second; the lag includes start-up"),
        );
    }
    let result = measure(ctx, report, &server, due_at, due_ids.into_iter().collect()).await;
    server.conclude(report, result).await
}

async fn measure(
    ctx: &Ctx,
    report: &mut Report,
    server: &ServerProc,
    due_at: DateTime<Utc>,
    expected: HashSet<String>,
) -> anyhow::Result<()> {
    let k = expected.len() as u64;
    let api = Api::new(&ctx.http, &server.base);
    // No polling before the due second + 1 s. Then cheap probes only: `/metrics` would count
    // all M triggers at every scrape (CPU, and page cache that shows up in the server's RSS).
    let until_due = (due_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1);
    let pb = progress(k, "schedule: waiting for the due second");
    tokio::time::sleep(until_due).await;
    pb.set_message("schedule: due runs");
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(k * 10);
    let runs = loop {
        if !api.any_run("pending").await? && !api.any_run("running").await? {
            let runs = api.all_runs().await?;
            pb.set_position(runs.iter().filter(|r| r.state == "succeeded").count() as u64);
            if runs.len() as u64 >= k {
                break runs;
            }
        }
        if Instant::now() > deadline {
            let runs = api.all_runs().await?;
            let counts = RunCounts::from_runs(&runs);
            anyhow::bail!(
                "{} of {k} due runs succeeded {:?} after the due second",
                counts.get("succeeded"),
                Utc::now() - due_at
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    pb.finish_and_clear();
    let counts = RunCounts::from_runs(&runs);
    if let Err(e) = check_runs(&runs, &expected, &counts, Expect::Succeeded) {
        report.fail(e);
    }
    let off_time = runs.iter().filter(|r| r.scheduled_for != due_at).count();
    if off_time > 0 {
        report.fail(format!("{off_time} runs scheduled for another time than {due_at}"));
    }
    let mut lag: Vec<f64> = runs.iter().filter_map(|r| Some(ms_between(r.scheduled_for, r.started_at?))).collect();
    let [p50, _, p99, max] = latency_summary(&mut lag);
    report.set("p50_ms", p50);
    report.set("p99_ms", p99);
    report.set("max_ms", max);
    if let Some(last) = runs.iter().filter_map(|r| r.started_at).max() {
        report.set_f("last_start_ms", ms_between(due_at, last), 1);
    }

    // Idle: nothing due for 30 days; sample the server's CPU time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Duration::from_secs_f64(ctx.args.idle_secs.max(0.5));
    let before = server.cpu_secs();
    let t = Instant::now();
    let pb = progress(idle.as_secs(), "schedule: idle CPU");
    tokio::time::sleep(idle).await;
    pb.finish_and_clear();
    let after = server.cpu_secs();
    if let (Some(a), Some(b)) = (before, after) {
        report.set_f("idle_cpu_pct", 100.0 * (b - a) / t.elapsed().as_secs_f64(), 2);
    }
    report.set("idle_secs", idle.as_secs_f64());
    // Nothing else may have fired meanwhile.
    let total = api.all_runs().await?.len() as u64;
    if total != k {
        report.fail(format!("{total} runs exist after the idle period, expected {k}"));
    }
    Ok(())
}
