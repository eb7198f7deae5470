//! Child processes under test (`sundial serve`, `sundial worker`) and what `/proc` says about
//! them and the machine.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

const READY_MARK: &str = "sundial ready on http://";
const LOG_TAIL: usize = 200;

type Log = Arc<Mutex<VecDeque<String>>>;

/// A `sundial serve` child on a random port.
pub(super) struct ServerProc {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// When it was spawned.
    pub spawned_at: DateTime<Utc>,
    /// When it logged that it was ready (its in-process worker pool is started just before).
    pub ready_at: DateTime<Utc>,
    log: Log,
}

impl ServerProc {
    /// Starts `sundial serve --db URL --workers W` and waits for its ready line.
    pub(super) async fn start(db_url: &str, workers: u32) -> anyhow::Result<Self> {
        let mut cmd = sundial_command();
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db", db_url, "--retention", "0s"])
            .args(["--workers", &workers.to_string()])
            .env("RUST_LOG", "warn,sundial::cli::serve=info");
        let spawned_at = Utc::now();
        let (mut child, log, ready) = spawn_logged(cmd, true)?;
        let pid = child.id().context("server pid")?;
        let ready = ready.expect("asked for the ready line");
        let (addr, ready_at) = tokio::select! {
            r = ready => match r {
                Ok(r) => r,
                Err(_) => bail!("server exited before it was ready:\n{}", tail(&log)),
            },
            status = child.wait() => bail!("server exited ({}) before it was ready:\n{}", status?, tail(&log)),
            _ = tokio::time::sleep(Duration::from_secs(120)) => {
                let _ = child.kill().await;
                bail!("server not ready after 120 s:\n{}", tail(&log))
            }
        };
        Ok(Self { child, pid, base: format!("http://{addr}"), spawned_at, ready_at, log })
    }

    /// Peak resident set (VmHWM), MB.
    pub(super) fn rss_mb(&self) -> Option<f64> {
        peak_rss_mb(self.pid)
    }

    /// CPU time used so far (user + system, all threads), seconds.
    pub(super) fn cpu_secs(&self) -> Option<f64> {
        cpu_secs(self.pid)
    }

    /// Adds its last log lines (warnings and errors) to an error.
    pub(super) fn explain<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        r.map_err(|e| {
            let log = tail(&self.log);
            if log.is_empty() {
                e
            } else {
                e.context(format!("server log (last lines):\n{log}\n"))
            }
        })
    }

    /// Warning or error lines it logged.
    pub(super) fn problems(&self) -> Vec<String> {
        problems(&self.log)
    }

    /// SIGTERM, then waits for it to drain and exit (SIGKILL after 30 s).
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        terminate(self.child, self.pid, "server", &self.log).await
    }

    /// Ends a scenario's server: its peak RSS and logged problems go into `report`, `result`
    /// gets its last log lines, and it is stopped. The scenario's error comes first.
    pub(super) async fn conclude(
        self,
        report: &mut super::report::Report,
        result: anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let result = self.explain(result);
        report.set_f("rss_mb", self.rss_mb().unwrap_or(f64::NAN), 1);
        report.note_log("server", self.problems());
        let stopped = self.stop().await;
        result?;
        stopped
    }
}

/// A `sundial worker` child.
pub(super) struct WorkerProc {
    child: Child,
    pid: u32,
    log: Log,
}

impl WorkerProc {
    /// Starts `sundial worker --server BASE --handlers echo --capacity C`.
    pub(super) fn start(base: &str, capacity: u32, name: &str) -> anyhow::Result<Self> {
        let mut cmd = sundial_command();
        cmd.args(["worker", "--server", base, "--handlers", "echo", "--name", name])
            .args(["--capacity", &capacity.to_string()])
            .env("RUST_LOG", "warn");
        let (child, log, _) = spawn_logged(cmd, false)?;
        let pid = child.id().context("worker pid")?;
        Ok(Self { child, pid, log })
    }

    /// Warning or error lines it logged.
    pub(super) fn problems(&self) -> Vec<String> {
        problems(&self.log)
    }

    /// SIGTERM, then waits for it to drain, deregister and exit.
    pub(super) async fn stop(self) -> anyhow::Result<()> {
        terminate(self.child, self.pid, "worker", &self.log).await
    }
}

/// This binary, with no `SUNDIAL_*` settings leaking in from the environment.
/// The `sundial` binary the benchmark starts (`--server-exe`; default: itself).
pub(super) static SERVER_EXE: OnceLock<std::path::PathBuf> = OnceLock::new();

fn sundial_command() -> Command {
    let exe = SERVER_EXE.get().cloned().or_else(|| std::env::current_exe().ok()).unwrap_or_else(|| "sundial".into());
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SUNDIAL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    cmd
}

type Ready = oneshot::Receiver<(String, DateTime<Utc>)>;

/// Spawns `cmd`, keeping the last lines of its stderr; with `want_ready`, reports the address
/// and time of the `sundial ready on http://ADDR` line.
fn spawn_logged(mut cmd: Command, want_ready: bool) -> anyhow::Result<(Child, Log, Option<Ready>)> {
    let mut child = cmd.spawn().context("spawning a sundial child process")?;
    let stderr = child.stderr.take().context("child stderr")?;
    let log: Log = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = oneshot::channel();
    let mut tx = want_ready.then_some(tx);
    let l = log.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = strip_ansi(&line);
            if let Some(pos) = line.find(READY_MARK) {
                if let Some(tx) = tx.take() {
                    let addr: String = line[pos + READY_MARK.len()..]
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != '"')
                        .collect();
                    // The log line's own timestamp, when it has one, is closer to when the
                    // pool started than the moment this task reads the line.
                    let at = line
                        .split_whitespace()
                        .next()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_else(Utc::now);
                    let _ = tx.send((addr, at));
                }
            }
            let mut log = l.lock().unwrap();
            if log.len() == LOG_TAIL {
                log.pop_front();
            }
            log.push_back(line);
        }
    });
    Ok((child, log, want_ready.then_some(rx)))
}

async fn terminate(mut child: Child, pid: u32, what: &str, log: &Log) -> anyhow::Result<()> {
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => bail!("{what} {pid} exited with {status}:\n{}", tail(log)),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let _ = child.kill().await;
            bail!("{what} {pid} did not exit within 30 s of SIGTERM; killed:\n{}", tail(log))
        }
    }
}

fn problems(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().filter(|l| l.contains("ERROR") || l.contains(" WARN ")).cloned().collect()
}

fn tail(log: &Log) -> String {
    let log = log.lock().unwrap();
    let skip = log.len().saturating_sub(30);
    log.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Peak resident set of a process (VmHWM), MB.
pub(super) fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User + system CPU time of a process (all its threads, live and exited), seconds.
pub(super) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// CPU time of the server and of this process over a timed window.
pub(super) struct CpuWindow {
    server: Option<f64>,
    client: Option<f64>,
}

impl CpuWindow {
    /// Starts the window.
    pub(super) fn start(server: &ServerProc) -> Self {
        Self { server: server.cpu_secs(), client: cpu_secs(std::process::id()) }
    }

    /// Sets `server_cpu_pct` and `client_cpu_pct` (100 = one core busy for the whole window).
    pub(super) fn finish(self, server: &ServerProc, report: &mut super::report::Report, elapsed_s: f64) {
        if let (Some(a), Some(b)) = (self.server, server.cpu_secs()) {
            report.set_f("server_cpu_pct", 100.0 * (b - a) / elapsed_s, 0);
        }
        if let (Some(a), Some(b)) = (self.client, cpu_secs(std::process::id())) {
            report.set_f("client_cpu_pct", 100.0 * (b - a) / elapsed_s, 0);
        }
    }
}

/// 1-minute load average.
pub(super) fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Whole-machine CPU busy share over an interval, from `/proc/stat`.
pub(super) struct CpuBusy(Option<(u64, u64)>);

impl CpuBusy {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let v: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3)? + v.get(4)?;
        Some((total, idle))
    }

    /// Starts measuring.
    pub(super) fn start() -> Self {
        Self(Self::sample())
    }

    /// Busy share of all cores since `start`, percent.
    pub(super) fn finish(self) -> Option<f64> {
        let (t0, i0) = self.0?;
        let (t1, i1) = Self::sample()?;
        let total = t1.checked_sub(t0)?;
        (total > 0).then(|| 100.0 * (total - (i1 - i0)) as f64 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready"), "2026  INFO ready");
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(peak_rss_mb(pid).unwrap() > 0.0);
        assert!(cpu_secs(pid).is_some());
    }
}
