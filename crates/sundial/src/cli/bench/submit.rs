//! `submit` and `submit_batch`: submissions over real HTTP to a server with no workers; every
//! answer comes after the commit. Checked: one pending run per accepted job, nothing else.

use super::api::{check_runs, Api, Expect};
use super::procs::{CpuWindow, ServerProc};
use super::report::{latency_summary, Report};
use super::{progress, Ctx};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn job_json(i: u64) -> String {
    format!(r#"{{"handler":"echo","payload":{{"i":{i}}}}}"#)
}

/// `submit`: N single-job `POST /v1/jobs` from C concurrent clients (after C warm-up calls).
pub(super) async fn single(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    ctx.db.fresh().await?;
    let server = ServerProc::start(&ctx.db.url(), 0).await?;
    let result = single_on(ctx, report, &server).await;
    server.conclude(report, result).await
}

async fn single_on(ctx: &Ctx, report: &mut Report, server: &ServerProc) -> anyhow::Result<()> {
    let n = ctx.args.n;
    let c = ctx.args.concurrency;
    let api = Api::new(&ctx.http, &server.base);
    report.set("n", n);
    report.set("concurrency", c);

    // Warm-up: one call per client, so every connection is open before the clock starts.
    let warm = futures::future::try_join_all((0..c as u64).map(|i| api.submit(job_json(n + i)))).await?;
    report.set("warmup", warm.len());

    let pb = progress(n, "submit");
    let next = Arc::new(AtomicU64::new(0));
    let cpu = CpuWindow::start(server);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for _ in 0..c {
        let api = api.clone();
        let next = next.clone();
        let pb = pb.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok((lat, ids));
                }
                let t = Instant::now();
                ids.push(api.submit(job_json(i)).await?);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                pb.inc(1);
            }
        }));
    }
    let mut lat = Vec::with_capacity(n as usize);
    let mut expected: HashSet<String> = warm.into_iter().collect();
    let mut accepted = 0usize;
    for t in tasks {
        let (l, ids) = t.await??;
        lat.extend(l);
        accepted += ids.len();
        expected.extend(ids);
    }
    let elapsed = started.elapsed().as_secs_f64();
    cpu.finish(server, report, elapsed);
    pb.finish_and_clear();

    let [p50, _, p99, max] = latency_summary(&mut lat);
    report.set_f("jobs_per_s", n as f64 / elapsed, 0);
    report.set("p50_ms", p50);
    report.set("p99_ms", p99);
    report.set("max_ms", max);

    let counts = api.run_counts().await?;
    report.set_f("group_commit_mean", counts.mean("sundial_group_commit_size").unwrap_or(f64::NAN), 1);
    if accepted as u64 != n {
        report.fail(format!("{accepted} of {n} submissions accepted"));
    }
    let runs = api.runs("pending").await?;
    if let Err(e) = check_runs(&runs, &expected, &counts, Expect::Pending) {
        report.fail(e);
    }
    Ok(())
}

/// `submit_batch`: N jobs via `POST /v1/jobs/batch`, `--batch-size` per request.
pub(super) async fn batch(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    ctx.db.fresh().await?;
    let server = ServerProc::start(&ctx.db.url(), 0).await?;
    let result = batch_on(ctx, report, &server).await;
    server.conclude(report, result).await
}

/// A `POST /v1/jobs/batch` body of `echo` jobs numbered by `range`.
pub(super) fn batch_body(range: std::ops::Range<u64>) -> Vec<u8> {
    let mut body = String::with_capacity(12 + (range.end - range.start) as usize * 48);
    body.push_str(r#"{"jobs":["#);
    for i in range.clone() {
        if i > range.start {
            body.push(',');
        }
        body.push_str(&job_json(i));
    }
    body.push_str("]}");
    body.into_bytes()
}

async fn batch_on(ctx: &Ctx, report: &mut Report, server: &ServerProc) -> anyhow::Result<()> {
    let n = ctx.args.n;
    let size = ctx.args.batch_size as u64;
    let api = Api::new(&ctx.http, &server.base);
    report.set("n", n);
    report.set("batch_size", size);
    report.set("batch_concurrency", ctx.args.batch_concurrency);

    // Bodies are built before the clock starts: the server's ingest rate is measured.
    let bodies: Vec<(u64, Vec<u8>)> =
        (0..n).step_by(size as usize).map(|s| ((s + size).min(n) - s, batch_body(s..(s + size).min(n)))).collect();
    report.set("requests", bodies.len());
    let warm = api.submit_batch(batch_body(n..n + 10)).await?;
    report.set("warmup", warm.len());

    let pb = progress(n, "submit_batch");
    let cpu = CpuWindow::start(server);
    let started = Instant::now();
    let mut results = futures::stream::iter(bodies)
        .map(|(count, body)| {
            let api = api.clone();
            async move {
                let t = Instant::now();
                let ids = api.submit_batch(body).await?;
                anyhow::ensure!(ids.len() as u64 == count, "batch of {count} answered {} items", ids.len());
                anyhow::Ok((t.elapsed().as_secs_f64() * 1000.0, ids))
            }
        })
        .buffer_unordered(ctx.args.batch_concurrency);
    let mut lat = Vec::new();
    let mut expected: HashSet<String> = warm.into_iter().collect();
    let mut accepted = 0u64;
    while let Some(r) = results.next().await {
        let (ms, ids) = r?;
        lat.push(ms);
        accepted += ids.len() as u64;
        pb.inc(ids.len() as u64);
        expected.extend(ids);
    }
    let elapsed = started.elapsed().as_secs_f64();
    cpu.finish(server, report, elapsed);
    pb.finish_and_clear();

    let [p50, _, p99, _] = latency_summary(&mut lat);
    report.set_f("jobs_per_s", n as f64 / elapsed, 0);
    report.set("request_p50_ms", p50);
    report.set("request_p99_ms", p99);

    if accepted != n {
        report.fail(format!("{accepted} of {n} submissions accepted"));
    }
    let counts = api.run_counts().await?;
    let runs = api.runs("pending").await?;
    if let Err(e) = check_runs(&runs, &expected, &counts, Expect::Pending) {
        report.fail(e);
    }
    Ok(())
}
