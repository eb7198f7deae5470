//! `execute`: N `echo` jobs stored and due before any worker exists; timed from the workers'
//! start to the last run's `finished_at` (read back from the store). First the server's
//! in-process pool (`serve --workers W`, timed from the server's ready line, which it logs
//! right after starting the pool), then on a fresh database `--remote-workers` `sundial
//! worker` processes against a server without workers (timed from spawning them).

use super::api::{check_runs, ms_between, Api, Expect};
use super::procs::{ServerProc, WorkerProc};
use super::report::Report;
use super::{progress, Ctx};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Remote,
}

struct Phase {
    jobs_per_s: f64,
    excl_startup: f64,
    first_start_ms: f64,
    startup_ms: Option<f64>,
    rss_mb: Option<f64>,
    complete_batch_mean: Option<f64>,
    server_cpu_pct: Option<f64>,
}

/// Runs both phases.
pub(super) async fn run(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    report.set("n", ctx.args.n);
    report.set("workers", ctx.args.workers);
    let local = phase(ctx, report, Mode::InProcess).await?;
    report.set_f("jobs_per_s", local.jobs_per_s, 0);
    report.set_f("jobs_per_s_excl_startup", local.excl_startup, 0);
    report.set_f("first_start_ms", local.first_start_ms, 1);
    report.set_f("startup_ms", local.startup_ms.unwrap_or(f64::NAN), 1);
    report.set_f("rss_mb", local.rss_mb.unwrap_or(f64::NAN), 1);
    report.set_f("complete_batch_mean", local.complete_batch_mean.unwrap_or(f64::NAN), 1);
    report.set_f("server_cpu_pct", local.server_cpu_pct.unwrap_or(f64::NAN), 0);

    report.set("remote_processes", ctx.args.remote_workers);
    report.set("remote_capacity", ctx.args.workers);
    if ctx.args.remote_workers > 0 {
        let remote = phase(ctx, report, Mode::Remote).await?;
        report.set_f("remote_jobs_per_s", remote.jobs_per_s, 0);
        report.set_f("remote_jobs_per_s_excl_startup", remote.excl_startup, 0);
        report.set_f("remote_first_start_ms", remote.first_start_ms, 1);
        report.set_f("remote_rss_mb", remote.rss_mb.unwrap_or(f64::NAN), 1);
        report.set_f("remote_complete_batch_mean", remote.complete_batch_mean.unwrap_or(f64::NAN), 1);
        report.set_f("remote_server_cpu_pct", remote.server_cpu_pct.unwrap_or(f64::NAN), 0);
    }
    Ok(())
}

/// How often completion is polled (each poll counts runs in the store, so not too often; the
/// end time comes from the stored `finished_at`, not from the poll).
pub(super) fn poll_interval(n: u64) -> Duration {
    Duration::from_millis((n / 100).clamp(100, 1000))
}

async fn phase(ctx: &Ctx, report: &mut Report, mode: Mode) -> anyhow::Result<Phase> {
    let n = ctx.args.n;
    let label = if mode == Mode::InProcess { "in-process" } else { "remote" };
    ctx.db.fresh().await?;
    let pb = progress(n, format!("execute {label}: storing"));
    let ids = ctx.db.insert(n, true, &pb, |i| serde_json::json!({"handler": "echo", "payload": {"i": i}})).await?;
    pb.finish_and_clear();
    let expected: HashSet<String> = ids.into_iter().collect();
    ctx.db.settle().await;

    let (server, t0, workers) = match mode {
        Mode::InProcess => {
            let server = ServerProc::start(&ctx.db.url(), ctx.args.workers).await?;
            let t0 = server.ready_at;
            (server, t0, Vec::new())
        }
        Mode::Remote => {
            let server = ServerProc::start(&ctx.db.url(), 0).await?;
            let t0 = Utc::now();
            let mut workers = Vec::new();
            for i in 0..ctx.args.remote_workers {
                workers.push(WorkerProc::start(&server.base, ctx.args.workers, &format!("bench-remote-{i}"))?);
            }
            (server, t0, workers)
        }
    };
    let startup_ms = ms_between(server.spawned_at, server.ready_at);
    let result = server.explain(measure(ctx, report, &server, t0, &expected, label).await);
    let rss_mb = server.rss_mb();
    report.note_log(&format!("server ({label} phase)"), server.problems());
    for (i, w) in workers.into_iter().enumerate() {
        report.note_log(&format!("worker {i}"), w.problems());
        w.stop().await?;
    }
    server.stop().await?;
    let (jobs_per_s, excl_startup, first_start_ms, complete_batch_mean, server_cpu_pct) = result?;
    Ok(Phase {
        jobs_per_s,
        excl_startup,
        first_start_ms,
        startup_ms: (mode == Mode::InProcess).then_some(startup_ms),
        rss_mb,
        complete_batch_mean,
        server_cpu_pct,
    })
}

async fn measure(
    ctx: &Ctx,
    report: &mut Report,
    server: &ServerProc,
    t0: DateTime<Utc>,
    expected: &HashSet<String>,
    label: &str,
) -> anyhow::Result<(f64, f64, f64, Option<f64>, Option<f64>)> {
    let n = ctx.args.n;
    let api = Api::new(&ctx.http, &server.base);
    let pb = progress(n, format!("execute {label}"));
    let counts = api.wait_succeeded(n, poll_interval(n), Duration::from_secs(60), &pb).await?;
    // Server CPU since it started, over the wall time since it was spawned (100 = one core).
    let server_cpu_pct = server.cpu_secs().map(|c| 100.0 * c / (ms_between(server.spawned_at, Utc::now()) / 1000.0));
    pb.finish_and_clear();
    let runs = api.runs("succeeded").await?;
    if let Err(e) = check_runs(&runs, expected, &counts, Expect::Succeeded) {
        report.fail(format!("{label}: {e}"));
    }
    let last = runs.iter().filter_map(|r| r.finished_at).max().unwrap_or(t0);
    let first = runs.iter().filter_map(|r| r.started_at).min().unwrap_or(t0);
    let total_s = ms_between(t0, last) / 1000.0;
    let busy_s = ms_between(first, last) / 1000.0;
    Ok((
        n as f64 / total_s,
        n as f64 / busy_s,
        ms_between(t0, first),
        counts.mean("sundial_group_commit_size"),
        server_cpu_pct,
    ))
}
