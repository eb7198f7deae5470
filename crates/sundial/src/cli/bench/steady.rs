//! `steady` and `pinned`: a server with in-process workers under a steady offered load (jobs
//! due now, submitted open-loop in a batch every 100 ms at `--load-rate` per second), for
//! minutes. What the store recorded is read from the database afterwards and cut into windows:
//! submitted and completed per second, pickup lag (`started_at − scheduled_for`) and backlog
//! (submitted − started) over time, in `series`, for `scripts/plot-steady.py`.
//!
//! * `steady` splits `--duration-secs` into thirds (`first`, `middle`, `last`): a store whose
//!   claims slow down as history and dead tuples grow shows it as a falling rate or a rising lag
//!   from the first third to the last.
//! * `pinned` (PostgreSQL) runs phases `before`, `pinned` and `after`; for the `pinned` phase a
//!   connection runs `BEGIN; SELECT txid_current();` and idles, so vacuum can reclaim nothing.
//!   `pinned_ratio` is the pinned phase's completion rate over the `before` one; `drain_s` how
//!   long after the transaction ends the backlog is back to one second of load.

use super::api::Api;
use super::db::RunTimes;
use super::procs::{CpuWindow, ServerProc};
use super::report::{latency_summary, Report};
use super::submit::batch_body;
use super::{progress, Ctx};
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// A named stretch of the load, in seconds.
struct Phase {
    name: &'static str,
    secs: f64,
}

/// Largest `POST /v1/jobs/batch` the load sends (the API's own limit is 10,000).
const MAX_BATCH: u64 = 5000;

/// `steady`: `--duration-secs` of load in three equal phases.
pub(super) async fn steady(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    let third = ctx.args.duration_secs / 3.0;
    let phases = [("first", third), ("middle", third), ("last", third)].map(|(name, secs)| Phase { name, secs });
    run(ctx, report, &phases, None).await
}

/// `pinned`: load before, during and after an idle transaction that holds its snapshot.
pub(super) async fn pinned(ctx: &Ctx, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(ctx.db.kind() == "postgres", "pinned: needs PostgreSQL (--db private)");
    let a = &ctx.args;
    let phases = [("before", a.pin_before_secs), ("pinned", a.pin_secs), ("after", a.pin_after_secs)]
        .map(|(name, secs)| Phase { name, secs });
    run(ctx, report, &phases, Some(1)).await
}

async fn run(ctx: &Ctx, report: &mut Report, phases: &[Phase], pin: Option<usize>) -> anyhow::Result<()> {
    anyhow::ensure!(ctx.args.load_rate > 0.0, "--load-rate: must be positive");
    anyhow::ensure!(phases.iter().all(|p| p.secs > 0.0), "every phase must last more than 0 s");
    ctx.db.fresh().await?;
    let server = ServerProc::start(&ctx.db.url(), ctx.args.workers).await?;
    let result = measure(ctx, report, &server, phases, pin).await;
    server.conclude(report, result).await
}

async fn measure(
    ctx: &Ctx,
    report: &mut Report,
    server: &ServerProc,
    phases: &[Phase],
    pin: Option<usize>,
) -> anyhow::Result<()> {
    let rate = ctx.args.load_rate;
    let window = ctx.args.window_secs.max(1.0);
    let total_secs: f64 = phases.iter().map(|p| p.secs).sum();
    // Phase i runs from bounds[i] to bounds[i + 1] seconds after the load starts.
    let bounds: Vec<f64> =
        std::iter::once(0.0).chain(phases.iter().scan(0.0, |t, p| Some(*t + p.secs).inspect(|e| *t = *e))).collect();
    report.set("load_rate", rate);
    report.set("workers", ctx.args.workers);
    report.set("window_s", window);
    report.set("phases", phases.iter().map(|p| json!({"name": p.name, "secs": p.secs})).collect::<Vec<_>>());
    let api = Api::new(&ctx.http, &server.base);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pb = progress(total_secs as u64, format!("{} @ {rate}/s", phases[0].name));
    let cpu = CpuWindow::start(server);
    let t0_us = chrono::Utc::now().timestamp_micros();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = JoinSet::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut sent = 0u64;
    let mut pinned = None;
    let mut pin_done = false;
    loop {
        ticker.tick().await;
        let t = started.elapsed().as_secs_f64();
        if t >= total_secs {
            break;
        }
        pb.set_position(t as u64);
        if let Some(p) = pin {
            if pinned.is_none() && !pin_done && t >= bounds[p] {
                pinned = Some(ctx.db.pin_snapshot().await?);
                pb.set_message(format!("{} @ {rate}/s", phases[p].name));
            } else if pinned.is_some() && t >= bounds[p + 1] {
                pinned.take().expect("checked").release().await?;
                pin_done = true;
                pb.set_message(format!("{} @ {rate}/s", phases.get(p + 1).map_or("end", |ph| ph.name)));
            }
        }
        let due = (rate * t) as u64;
        while sent < due {
            let end = due.min(sent + MAX_BATCH);
            let (api, body, count) = (api.clone(), batch_body(sent..end), end - sent);
            in_flight.spawn(async move {
                let got = api.submit_batch(body).await?;
                anyhow::ensure!(got.len() as u64 == count, "batch of {count} answered {} items", got.len());
                anyhow::Ok(got)
            });
            sent = end;
        }
        while let Some(done) = in_flight.try_join_next() {
            ids.extend(done??);
        }
    }
    if let Some(p) = pinned.take() {
        p.release().await?;
    }
    while let Some(done) = in_flight.join_next().await {
        ids.extend(done??);
    }
    let load_secs = started.elapsed().as_secs_f64();
    cpu.finish(server, report, load_secs);
    report.set("n", sent);
    report.set_f("offered_jobs_per_s", sent as f64 / load_secs, 1);
    if ids.len() as u64 != sent {
        report.fail(format!("{} of {sent} submissions accepted", ids.len()));
    }

    pb.set_message("draining");
    pb.set_length(sent);
    api.wait_succeeded(sent, Duration::from_secs(1), Duration::from_secs(300), &pb).await?;
    pb.finish_and_clear();
    if let Some((dead, mb)) = ctx.db.runs_table_health().await {
        report.set("runs_dead_tuples", dead);
        report.set_f("runs_total_mb", mb, 1);
    }
    let (runs, attempts) = ctx.db.run_times().await?;
    if let Err(e) = exactly_once(&runs, attempts, &ids) {
        report.fail(e);
    }

    let timeline = Timeline::new(&runs, t0_us);
    for (i, p) in phases.iter().enumerate() {
        let (from, to) = (bounds[i], bounds[i + 1]);
        report.set_f(&format!("{}_completed_per_s", p.name), timeline.completed(from, to) / (to - from), 1);
        report.set(&format!("{}_p99_lag_ms", p.name), timeline.lag(from, to)[2]);
        report.set(&format!("{}_end_backlog", p.name), timeline.backlog_at(to));
    }
    if let Some(p) = pin {
        let (before, during) =
            (timeline.completed(0.0, bounds[p]) / bounds[p], timeline.completed(bounds[p], bounds[p + 1]));
        report.set_f("pinned_ratio", during / (bounds[p + 1] - bounds[p]) / before, 3);
        report.set("max_backlog", timeline.max_backlog());
        let drained = timeline.drained_after(bounds[p + 1], rate.ceil() as i64);
        report.set_f("drain_s", drained.unwrap_or(f64::NAN), 0);
    } else {
        let [p50, _, p99, max] = timeline.lag(0.0, total_secs);
        report.set("p50_lag_ms", p50);
        report.set("p99_lag_ms", p99);
        report.set("max_lag_ms", max);
        report.set_f("completed_per_s", timeline.completed(0.0, total_secs) / total_secs, 1);
    }
    report.set("series", timeline.series(window));
    Ok(())
}

/// Every accepted job has exactly one run, it succeeded on its first attempt, and no attempt
/// was recorded twice.
fn exactly_once(runs: &[RunTimes], attempts: i64, accepted: &HashSet<String>) -> Result<(), String> {
    let jobs: HashSet<&str> = runs.iter().map(|r| r.job_id.as_str()).collect();
    if jobs.len() != runs.len() {
        return Err(format!("{} runs for {} jobs: some job ran twice", runs.len(), jobs.len()));
    }
    if let Some(missing) = accepted.iter().find(|id| !jobs.contains(id.as_str())) {
        return Err(format!("accepted job {missing} has no run ({} runs, {} accepted)", runs.len(), accepted.len()));
    }
    if let Some(r) = runs.iter().find(|r| r.state != "succeeded" || r.attempt != 1) {
        return Err(format!("job {} ended {} after {} attempts", r.job_id, r.state, r.attempt));
    }
    if attempts != runs.len() as i64 {
        return Err(format!("{attempts} attempts recorded for {} runs", runs.len()));
    }
    Ok(())
}

/// The runs' times, in seconds since the load started.
struct Timeline {
    /// (created, started, finished, lag ms), sorted by started.
    runs: Vec<(f64, f64, f64, f64)>,
    created_sorted: Vec<f64>,
    started_sorted: Vec<f64>,
    finished_sorted: Vec<f64>,
}

impl Timeline {
    fn new(runs: &[RunTimes], t0_us: i64) -> Self {
        let s = |us: i64| (us - t0_us) as f64 / 1e6;
        let mut rows: Vec<(f64, f64, f64, f64)> = runs
            .iter()
            .map(|r| {
                let started = r.started_at.unwrap_or(i64::MAX / 2);
                let lag = (started - r.scheduled_for) as f64 / 1000.0;
                (s(r.created_at), s(started), s(r.finished_at.unwrap_or(i64::MAX / 2)), lag)
            })
            .collect();
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut created_sorted: Vec<f64> = rows.iter().map(|r| r.0).collect();
        created_sorted.sort_by(f64::total_cmp);
        let mut finished_sorted: Vec<f64> = rows.iter().map(|r| r.2).collect();
        finished_sorted.sort_by(f64::total_cmp);
        let started_sorted = rows.iter().map(|r| r.1).collect();
        Self { runs: rows, created_sorted, started_sorted, finished_sorted }
    }

    /// Runs finished in `[from, to)`.
    fn completed(&self, from: f64, to: f64) -> f64 {
        let f = &self.finished_sorted;
        (f.partition_point(|&t| t < to) - f.partition_point(|&t| t < from)) as f64
    }

    /// Lag summary (p50, p95, p99, max; ms) of the runs started in `[from, to)`.
    fn lag(&self, from: f64, to: f64) -> [f64; 4] {
        let lo = self.started_sorted.partition_point(|&t| t < from);
        let hi = self.started_sorted.partition_point(|&t| t < to);
        let mut lags: Vec<f64> = self.runs[lo..hi].iter().map(|r| r.3).collect();
        latency_summary(&mut lags)
    }

    /// Submitted but not yet started at `t`.
    fn backlog_at(&self, t: f64) -> i64 {
        let created = self.created_sorted.partition_point(|&c| c <= t);
        let started = self.started_sorted.partition_point(|&s| s <= t);
        created as i64 - started as i64
    }

    /// The largest backlog at any whole second.
    fn max_backlog(&self) -> i64 {
        let end = self.started_sorted.last().copied().unwrap_or(0.0).ceil() as i64;
        (0..=end).map(|t| self.backlog_at(t as f64)).max().unwrap_or(0)
    }

    /// Seconds after `t` until the backlog (at whole seconds) is no more than `limit`.
    fn drained_after(&self, t: f64, limit: i64) -> Option<f64> {
        let end = self.started_sorted.last().copied().unwrap_or(t).ceil() + 1.0;
        let mut s = t;
        while s <= end {
            if self.backlog_at(s) <= limit {
                return Some(s - t);
            }
            s += 1.0;
        }
        None
    }

    /// One point per `window` seconds until the last run finished.
    fn series(&self, window: f64) -> Vec<serde_json::Value> {
        let end = self.finished_sorted.last().copied().unwrap_or(0.0);
        let mut out = Vec::new();
        let mut from = 0.0;
        while from < end {
            let to = from + window;
            let submitted =
                self.created_sorted.partition_point(|&c| c < to) - self.created_sorted.partition_point(|&c| c < from);
            let [p50, _, p99, _] = self.lag(from, to);
            out.push(json!({
                "t_s": to,
                "submitted_per_s": submitted as f64 / window,
                "completed_per_s": self.completed(from, to) / window,
                "p50_lag_ms": p50,
                "p99_lag_ms": p99,
                "backlog": self.backlog_at(to),
            }));
            from = to;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, created_s: f64, started_s: f64, finished_s: f64) -> RunTimes {
        let us = |s: f64| (s * 1e6) as i64;
        RunTimes {
            job_id: job.into(),
            state: "succeeded".into(),
            attempt: 1,
            created_at: us(created_s),
            scheduled_for: us(created_s),
            started_at: Some(us(started_s)),
            finished_at: Some(us(finished_s)),
        }
    }

    #[test]
    fn backlog_is_submitted_minus_started_and_drain_counts_from_the_release() {
        // Ten jobs submitted at 0 s; one starts each second from 1 s.
        let runs: Vec<RunTimes> = (0..10).map(|i| run(&format!("j{i}"), 0.0, 1.0 + i as f64, 1.5 + i as f64)).collect();
        let t = Timeline::new(&runs, 0);
        assert_eq!(t.backlog_at(0.0), 10);
        assert_eq!(t.backlog_at(3.0), 7);
        assert_eq!(t.max_backlog(), 10);
        assert_eq!(t.drained_after(2.0, 3), Some(5.0), "backlog 3 at 7 s");
        assert_eq!(t.completed(1.0, 3.0), 2.0);
        assert_eq!(t.lag(0.0, 100.0)[3], 10_000.0);
    }

    #[test]
    fn a_second_run_of_a_job_or_a_missing_one_fails_the_check() {
        let accepted: HashSet<String> = ["a", "b"].map(String::from).into();
        let ok = vec![run("a", 0.0, 1.0, 2.0), run("b", 0.0, 1.0, 2.0)];
        assert_eq!(exactly_once(&ok, 2, &accepted), Ok(()));
        let twice = vec![run("a", 0.0, 1.0, 2.0), run("a", 0.0, 1.0, 2.0)];
        assert!(exactly_once(&twice, 2, &accepted).unwrap_err().contains("ran twice"));
        assert!(exactly_once(&ok[..1], 1, &accepted).unwrap_err().contains("has no run"));
        assert!(exactly_once(&ok, 3, &accepted).unwrap_err().contains("3 attempts"));
    }
}
