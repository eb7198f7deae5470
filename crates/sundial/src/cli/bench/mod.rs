//! `sundial bench`: starts what it measures (a `sundial serve` child on a fresh database,
//! in-process or remote workers), runs the scenarios, checks that every job ran exactly once,
//! and prints a table (or, with `--json`, one JSON object per scenario on stdout).
//!
//! The server under test is always a child process (`current_exe() serve`), so its peak RSS
//! and CPU time come from `/proc/<pid>` and nothing the benchmark itself does is counted as
//! the server's. Every measured phase starts on a fresh database: a new SQLite file, or the
//! named PostgreSQL database dropped and created again.
//!
//! Scenarios (fields each prints are listed in [`report`]):
//! * `submit` — N single `POST /v1/jobs` over HTTP from C concurrent clients.
//! * `submit_batch` — N jobs via `POST /v1/jobs/batch`, `--batch-size` per request.
//! * `execute` — N stored, due `echo` jobs drained by the server's in-process pool, then
//!   (fresh database) by remote `sundial worker` processes.
//! * `latency` — idle workers; jobs due now submitted open-loop at `--rate` per second.
//! * `schedule` — M stored triggers, K of them due in the same second; start lag, idle CPU.
//! * `limits` — N due runs over 1,000 limit keys (`max_running` 2) behind a hot key's 10,000
//!   (`max_running` 1), drained by the in-process pool; compare its `jobs_per_s` with `execute`.
//! * `steady` (only when named) — `--duration-secs` of open-loop load at `--load-rate`; rate,
//!   lag and backlog over time (`series`, plotted by `scripts/plot-steady.py`).
//! * `pinned` (only when named; PostgreSQL) — the same load before, during and after an idle
//!   transaction that pins vacuum's horizon; completion rate in each phase and the drain time.
//!
//! `--db private` runs on a PostgreSQL cluster the benchmark starts itself (see [`cluster`]).

mod api;
pub(crate) mod cluster;
mod db;
mod execute;
mod latency;
mod limits;
mod procs;
mod report;
mod schedule;
mod steady;
mod submit;

use clap::{Args, ValueEnum};
use report::Report;
use std::time::Instant;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[clap(rename_all = "snake_case")]
pub enum Scenario {
    /// Single-job submissions over HTTP.
    Submit,
    /// Batched submissions over HTTP.
    SubmitBatch,
    /// Draining stored due jobs with in-process, then remote workers.
    Execute,
    /// Due-to-start latency at a steady submission rate.
    Latency,
    /// Many stored triggers, a burst of them due in one second.
    Schedule,
    /// Draining runs under per-key limits beside a hot, limited key.
    Limits,
    /// Minutes of steady offered load: rate, lag and backlog over time.
    Steady,
    /// Steady load while an idle transaction pins vacuum's horizon (PostgreSQL).
    Pinned,
}

impl Scenario {
    /// What runs when no scenario is named (`steady` and `pinned` take minutes: only by name).
    const ALL: [Scenario; 6] = [
        Scenario::Submit,
        Scenario::SubmitBatch,
        Scenario::Execute,
        Scenario::Latency,
        Scenario::Schedule,
        Scenario::Limits,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Submit => "submit",
            Scenario::SubmitBatch => "submit_batch",
            Scenario::Execute => "execute",
            Scenario::Latency => "latency",
            Scenario::Schedule => "schedule",
            Scenario::Limits => "limits",
            Scenario::Steady => "steady",
            Scenario::Pinned => "pinned",
        }
    }
}

/// `sundial bench` flags.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Database: `sqlite:///path.db` (must not exist yet; recreated for every phase),
    /// `postgres://…/NAME` (database NAME is DROPPED and created again for every phase), or
    /// `private` (a PostgreSQL cluster of its own: initdb in a temporary directory, autovacuum
    /// on, deleted at the end). Default: a fresh SQLite file in a temporary directory.
    #[arg(long)]
    pub db: Option<String>,
    /// Scenarios to run (repeatable or comma-separated; default all but `steady` and `pinned`).
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Jobs per throughput scenario.
    #[arg(long, default_value_t = 20_000)]
    pub n: u64,
    /// Concurrent HTTP clients for `submit`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// In-process worker slots of the server (and capacity of each remote worker).
    #[arg(long, default_value_t = 64)]
    pub workers: u32,
    /// Remote `sundial worker` processes for `execute`.
    #[arg(long, default_value_t = 2)]
    pub remote_workers: u32,
    /// Jobs per `POST /v1/jobs/batch` request.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Batch requests in flight for `submit_batch`.
    #[arg(long, default_value_t = 1)]
    pub batch_concurrency: usize,
    /// Submissions per second for `latency` (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Measured jobs for `latency` (default: the smaller of N and 2,000), after 50 warm-up jobs.
    #[arg(long)]
    pub latency_jobs: Option<u64>,
    /// Stored triggers for `schedule` (default 50 × N: 1,000,000 at the default N).
    #[arg(long)]
    pub triggers: Option<u64>,
    /// Triggers due in the same second for `schedule` (default N / 2: 10,000 at the default N).
    #[arg(long)]
    pub due: Option<u64>,
    /// Seconds over which the idle server's CPU use is sampled in `schedule`.
    #[arg(long, default_value_t = 5.0)]
    pub idle_secs: f64,
    /// Offered jobs per second for `steady` and `pinned` (open loop, a batch every 100 ms).
    #[arg(long, default_value_t = 1000.0)]
    pub load_rate: f64,
    /// Length of `steady`, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub duration_secs: f64,
    /// `pinned`: seconds of load before the snapshot is pinned.
    #[arg(long, default_value_t = 60.0)]
    pub pin_before_secs: f64,
    /// `pinned`: seconds the snapshot stays pinned.
    #[arg(long, default_value_t = 240.0)]
    pub pin_secs: f64,
    /// `pinned`: seconds of load after the pinning transaction ends.
    #[arg(long, default_value_t = 180.0)]
    pub pin_after_secs: f64,
    /// Width of one point of `series` in `steady` and `pinned`, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub window_secs: f64,
    /// The `sundial` binary whose `serve` and `worker` are measured (default: this one), to
    /// compare two builds in one sitting.
    #[arg(long)]
    pub server_exe: Option<std::path::PathBuf>,
    /// One JSON object per scenario on stdout (the table goes to stderr).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    fn latency_jobs(&self) -> u64 {
        self.latency_jobs.unwrap_or(self.n.min(2000)).max(1)
    }
    fn triggers(&self) -> u64 {
        self.triggers.unwrap_or(self.n.saturating_mul(50)).max(1)
    }
    fn due(&self) -> u64 {
        self.due.unwrap_or(self.n / 2).clamp(1, self.triggers())
    }
}

/// What every scenario shares: the database, the HTTP client, the settings.
pub(crate) struct Ctx {
    args: BenchArgs,
    db: db::BenchDb,
    git_rev: String,
    http: reqwest::Client,
}

/// Runs the benchmark; fails when a scenario could not run or its check failed.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.n > 0, "--n: must be at least 1");
    anyhow::ensure!(args.concurrency > 0, "--concurrency: must be at least 1");
    anyhow::ensure!(args.batch_size > 0 && args.batch_size <= 10_000, "--batch-size: must be 1..=10000");
    anyhow::ensure!(args.batch_concurrency > 0, "--batch-concurrency: must be at least 1");
    anyhow::ensure!(args.rate > 0.0, "--rate: must be positive");
    anyhow::ensure!(args.workers > 0, "--workers: must be at least 1");
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        Scenario::ALL
            .into_iter()
            .chain([Scenario::Steady, Scenario::Pinned])
            .filter(|s| args.scenarios.contains(s))
            .collect()
    };
    if let Some(exe) = &args.server_exe {
        anyhow::ensure!(exe.is_file(), "--server-exe {}: no such file", exe.display());
        let _ = procs::SERVER_EXE.set(std::path::absolute(exe)?);
    }
    let db = db::BenchDb::new(args.db.as_deref()).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let ctx = Ctx { git_rev: git_rev(), db, http, args: args.clone() };
    eprintln!(
        "sundial bench: db {} · n {} · git {} · scenarios {}",
        ctx.db.display(),
        args.n,
        ctx.git_rev,
        scenarios.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")
    );

    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for scenario in scenarios {
        let mut report = Report::new(scenario.name(), &ctx);
        let load = procs::loadavg();
        let busy = procs::CpuBusy::start();
        let started = Instant::now();
        let result = match scenario {
            Scenario::Submit => submit::single(&ctx, &mut report).await,
            Scenario::SubmitBatch => submit::batch(&ctx, &mut report).await,
            Scenario::Execute => execute::run(&ctx, &mut report).await,
            Scenario::Latency => latency::run(&ctx, &mut report).await,
            Scenario::Schedule => schedule::run(&ctx, &mut report).await,
            Scenario::Limits => limits::run(&ctx, &mut report).await,
            Scenario::Steady => steady::steady(&ctx, &mut report).await,
            Scenario::Pinned => steady::pinned(&ctx, &mut report).await,
        };
        report.set("elapsed_s", report::round(started.elapsed().as_secs_f64(), 2));
        report.set("loadavg_before", load);
        report.set("machine_cpu_busy_pct", busy.finish().map(|v| report::round(v, 1)));
        ctx.db.annotate(&mut report).await;
        match result {
            Ok(()) => report.finish_check(),
            Err(e) => report.set_error(format!("{e:#}")),
        }
        if let Some(problem) = report.problem() {
            eprintln!("{}: FAILED: {problem}", scenario.name());
            failed.push(scenario.name());
        }
        if args.json {
            println!("{}", report.to_json());
        }
        eprintln!("{}", report.summary_line());
        reports.push(report);
    }
    let table = report::table(&ctx, &reports);
    if args.json {
        eprint!("{table}");
    } else {
        print!("{table}");
    }
    anyhow::ensure!(failed.is_empty(), "benchmark failed: {}", failed.join(", "));
    Ok(())
}

/// `git rev-parse --short HEAD` of the tree this binary was built in (else of the current
/// directory), `-dirty` when tracked files have changes, or `unknown`.
fn git_rev() -> String {
    let exe_dir = std::env::current_exe().ok().and_then(|p| p.parent().map(std::path::Path::to_path_buf));
    exe_dir
        .into_iter()
        .chain(std::env::current_dir().ok())
        .find_map(|d| git_rev_in(&d))
        .unwrap_or_else(|| "unknown".into())
}

fn git_rev_in(dir: &std::path::Path) -> Option<String> {
    let git = |args: &[&str]| std::process::Command::new("git").arg("-C").arg(dir).args(args).output().ok();
    let out = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success())?;
    let rev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false);
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
fn progress(len: u64, msg: impl Into<String>) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg:>28} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(msg.into());
    pb
}
