//! `latency`: a server with idle in-process workers; one-time jobs due now submitted open-loop
//! (each `POST /v1/jobs` sent at its own time, whether or not earlier ones were answered) at
//! `--rate` per second. Headline: due → start = `started_at − scheduled_for` as the store
//! records them; also client send → start (the peers' definition) and the submit round trip.

use super::api::{check_runs, ms_between, Api, Expect};
use super::procs::ServerProc;
use super::report::{latency_summary, Report};
use super::{progress, Ctx};
use chrono::Utc;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Unmeasured jobs sent first (at the same rate).
const WARMUP: u64 = 50;

/// Runs the scenario.
pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    ctx.db.fresh().await?;
    let server = ServerProc::start(&ctx.db.url(), ctx.args.workers).await?;
    let result = measure(ctx, report, &server).await;
    server.conclude(report, result).await
}

async fn measure(ctx: &Ctx, report: &mut Report, server: &ServerProc) -> anyhow::Result<()> {
    let measured = ctx.args.latency_jobs();
    let total = WARMUP + measured;
    let rate = ctx.args.rate;
    report.set("n", measured);
    report.set("warmup", WARMUP);
    report.set("rate", rate);
    report.set("workers", ctx.args.workers);
    let api = Api::new(&ctx.http, &server.base);
    // Let the pool register and park in its long-poll claim.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pb = progress(total, format!("latency @ {rate}/s"));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = Vec::with_capacity(total as usize);
    let started = Instant::now();
    for i in 0..total {
        ticker.tick().await;
        let api = api.clone();
        sends.push(tokio::spawn(async move {
            let body = format!(r#"{{"handler":"echo","payload":{{"i":{i}}}}}"#);
            let sent = Utc::now();
            let t = Instant::now();
            let id = api.submit(body).await?;
            anyhow::Ok((i, id, sent, t.elapsed().as_secs_f64() * 1000.0))
        }));
        pb.inc(1);
    }
    let offered = (total - 1) as f64 / started.elapsed().as_secs_f64();
    let mut sent_at = HashMap::with_capacity(total as usize);
    let mut rtt = Vec::with_capacity(total as usize);
    for s in sends {
        let (i, id, sent, ms) = s.await??;
        if i >= WARMUP {
            rtt.push(ms);
        }
        sent_at.insert(id, (i, sent));
    }
    pb.set_message("latency: draining");
    let counts = api.wait_succeeded(total, Duration::from_millis(200), Duration::from_secs(60), &pb).await?;
    pb.finish_and_clear();

    let runs = api.runs("succeeded").await?;
    let expected: HashSet<String> = sent_at.keys().cloned().collect();
    if let Err(e) = check_runs(&runs, &expected, &counts, Expect::Succeeded) {
        report.fail(e);
    }
    let mut due_start = Vec::with_capacity(measured as usize);
    let mut from_submit = Vec::with_capacity(measured as usize);
    for r in &runs {
        let (Some((i, sent)), Some(started)) = (sent_at.get(&r.job_id), r.started_at) else { continue };
        if *i >= WARMUP {
            due_start.push(ms_between(r.scheduled_for, started));
            from_submit.push(ms_between(*sent, started));
        }
    }
    let [p50, p95, p99, max] = latency_summary(&mut due_start);
    report.set("p50_ms", p50);
    report.set("p95_ms", p95);
    report.set("p99_ms", p99);
    report.set("max_ms", max);
    let [s50, _, s99, smax] = latency_summary(&mut from_submit);
    report.set("from_submit_p50_ms", s50);
    report.set("from_submit_p99_ms", s99);
    report.set("from_submit_max_ms", smax);
    let [r50, _, r99, _] = latency_summary(&mut rtt);
    report.set("submit_rtt_p50_ms", r50);
    report.set("submit_rtt_p99_ms", r99);
    report.set_f("offered_jobs_per_s", offered, 1);
    Ok(())
}
