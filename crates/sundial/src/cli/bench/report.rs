//! One scenario's result: ordered fields, its check, the JSON line and the human table.
//!
//! Fields every scenario prints: `scenario`, `db` (`sqlite` | `postgres`), `db_url` (without
//! password), `n` (jobs the scenario measured and checked), `git_rev`, the durability in force
//! (SQLite: `synchronous`, `journal_mode`; PostgreSQL: `synchronous_commit`, `fsync`,
//! `server_version`), `check` (`"ok"` or `"FAILED: …"`), `error` (only when the scenario could
//! not run), `elapsed_s`, `loadavg_before`, `machine_cpu_busy_pct` (all cores, whole machine,
//! during the scenario: includes the benchmark, the server and anything else running).
//!
//! Scenario fields:
//! * `submit`: `jobs_per_s`, `p50_ms`, `p99_ms`, `max_ms`, `concurrency`, `warmup`,
//!   `group_commit_mean`, `server_cpu_pct`, `client_cpu_pct`, `rss_mb`.
//! * `submit_batch`: `jobs_per_s`, `batch_size`, `requests`, `batch_concurrency`, `warmup`,
//!   `request_p50_ms`, `request_p99_ms`, `server_cpu_pct`, `client_cpu_pct`, `rss_mb`.
//! * `execute`: `jobs_per_s`, `jobs_per_s_excl_startup`, `first_start_ms`, `startup_ms`,
//!   `workers`, `rss_mb`, `complete_batch_mean`, `server_cpu_pct`; `remote_jobs_per_s`,
//!   `remote_jobs_per_s_excl_startup`, `remote_first_start_ms`, `remote_processes`,
//!   `remote_capacity`, `remote_rss_mb`, `remote_complete_batch_mean`, `remote_server_cpu_pct`.
//!   (`*_cpu_pct`: 100 = one core busy the whole time; `process_log`: warnings the server or workers
//!   logged, when any.)
//! * `latency`: `p50_ms`, `p95_ms`, `p99_ms`, `max_ms` (due → start), `from_submit_p50_ms`,
//!   `from_submit_p99_ms`, `from_submit_max_ms` (client send → start), `submit_rtt_p50_ms`,
//!   `submit_rtt_p99_ms`, `rate`, `offered_jobs_per_s`, `warmup`, `workers`, `rss_mb`.
//! * `schedule`: `triggers`, `due`, `p50_ms`, `p99_ms`, `max_ms` (start lag), `last_start_ms`
//!   (last start after the due second), `idle_cpu_pct`, `idle_secs`, `rss_mb`, `startup_ms`,
//!   `insert_jobs_per_s` (direct store inserts, not a server figure), `workers`, `warning`
//!   (only when the server came up less than 0.5 s before the due second).
//! * `steady`, `pinned`: `load_rate`, `offered_jobs_per_s`, `phases`, and per phase
//!   `{phase}_completed_per_s`, `{phase}_p99_lag_ms`, `{phase}_end_backlog`; `steady` also
//!   `completed_per_s`, `p50_lag_ms`, `p99_lag_ms`, `max_lag_ms`; `pinned` also `pinned_ratio`,
//!   `max_backlog`, `drain_s`; both `series` (per `window_s`: `t_s`, `submitted_per_s`,
//!   `completed_per_s`, `p50_lag_ms`, `p99_lag_ms`, `backlog`), `runs_dead_tuples` and
//!   `runs_total_mb` (PostgreSQL), `server_cpu_pct`, `rss_mb`.

use super::Ctx;
use serde_json::Value;
use std::fmt::Write as _;

/// Rounds to `digits` decimals.
pub(super) fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sorts `values` (milliseconds) and returns (p50, p95, p99, max), rounded to µs.
pub(super) fn latency_summary(values: &mut [f64]) -> [f64; 4] {
    values.sort_by(|a, b| a.total_cmp(b));
    [
        round(percentile(values, 50.0), 3),
        round(percentile(values, 95.0), 3),
        round(percentile(values, 99.0), 3),
        round(values.last().copied().unwrap_or(f64::NAN), 3),
    ]
}

/// A scenario's result.
pub(super) struct Report {
    scenario: &'static str,
    fields: Vec<(String, Value)>,
    failures: Vec<String>,
    error: Option<String>,
}

impl Report {
    /// The common fields first, in a fixed order.
    pub(super) fn new(scenario: &'static str, ctx: &Ctx) -> Self {
        let mut r = Self { scenario, fields: Vec::new(), failures: Vec::new(), error: None };
        r.set("scenario", scenario);
        r.set("db", ctx.db.kind());
        r.set("db_url", ctx.db.display());
        r.set("n", Value::Null);
        r.set("git_rev", ctx.git_rev.as_str());
        if let Some(exe) = &ctx.args.server_exe {
            r.set("server_exe", exe.display().to_string());
        }
        for (k, v) in ctx.db.durability() {
            r.set(k, v.clone());
        }
        r.set("check", Value::Null);
        r
    }

    /// Sets a field (replacing it in place when present).
    pub(super) fn set(&mut self, key: &str, value: impl Into<Value>) {
        // (`From<f64>` already turns NaN and infinities into null.)
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key.to_string(), value)),
        }
    }

    /// Sets a float field, rounded; NaN becomes null.
    pub(super) fn set_f(&mut self, key: &str, value: f64, digits: i32) {
        if value.is_finite() {
            self.set(key, round(value, digits));
        } else {
            self.set(key, Value::Null);
        }
    }

    /// Records a failed check (the scenario goes on; the benchmark exits non-zero).
    pub(super) fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    /// Keeps (the first few of) the warnings and errors a child process logged, under
    /// `process_log`; they do not fail the check by themselves.
    pub(super) fn note_log(&mut self, who: &str, lines: Vec<String>) {
        if lines.is_empty() {
            return;
        }
        let mut all: Vec<Value> = match self.get("process_log") {
            Some(Value::Array(a)) => a.clone(),
            _ => Vec::new(),
        };
        all.push(Value::String(format!("{who}: {} warning/error lines", lines.len())));
        all.extend(lines.into_iter().take(5).map(|l| Value::String(format!("{who}: {l}"))));
        self.set("process_log", all);
    }

    /// Sets `check` from the failures recorded.
    pub(super) fn finish_check(&mut self) {
        let check =
            if self.failures.is_empty() { "ok".to_string() } else { format!("FAILED: {}", self.failures.join("; ")) };
        self.set("check", check);
    }

    /// The scenario could not run.
    pub(super) fn set_error(&mut self, error: String) {
        self.finish_check();
        if self.failures.is_empty() {
            self.set("check", "FAILED: did not complete");
        }
        self.set("error", error.clone());
        self.error = Some(error);
    }

    /// Why this scenario failed, if it did.
    pub(super) fn problem(&self) -> Option<String> {
        let mut p: Vec<String> = self.failures.clone();
        if let Some(e) = &self.error {
            p.push(e.clone());
        }
        (!p.is_empty()).then(|| p.join("; "))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// One JSON object, fields in insertion order.
    pub(super) fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("string serializes"));
            out.push(':');
            out.push_str(&serde_json::to_string(v).expect("value serializes"));
        }
        out.push('}');
        out
    }

    fn headline(&self) -> String {
        let keys: &[(&str, &str, &str)] = match self.scenario {
            "submit" => &[("jobs_per_s", "", " jobs/s"), ("p50_ms", "p50 ", " ms"), ("p99_ms", "p99 ", " ms")],
            "submit_batch" => &[("jobs_per_s", "", " jobs/s")],
            "execute" => &[
                ("jobs_per_s", "in-process ", " jobs/s"),
                ("remote_jobs_per_s", "remote ", " jobs/s"),
                ("rss_mb", "rss ", " MB"),
            ],
            "latency" => &[
                ("p50_ms", "p50 ", " ms"),
                ("p95_ms", "p95 ", " ms"),
                ("p99_ms", "p99 ", " ms"),
                ("max_ms", "max ", " ms"),
            ],
            "schedule" => &[
                ("p50_ms", "lag p50 ", " ms"),
                ("p99_ms", "p99 ", " ms"),
                ("max_ms", "max ", " ms"),
                ("idle_cpu_pct", "idle cpu ", " %"),
                ("rss_mb", "rss ", " MB"),
            ],
            "limits" => &[("jobs_per_s", "in-process ", " jobs/s"), ("hot_runs_done_meanwhile", "hot key ran ", "")],
            "steady" => &[
                ("first_completed_per_s", "first third ", " jobs/s"),
                ("last_completed_per_s", "last third ", " jobs/s"),
                ("first_p99_lag_ms", "lag p99 ", " ms"),
                ("last_p99_lag_ms", "→ ", " ms"),
            ],
            "pinned" => &[
                ("before_completed_per_s", "before ", " jobs/s"),
                ("pinned_completed_per_s", "pinned ", " jobs/s"),
                ("pinned_ratio", "ratio ", ""),
                ("max_backlog", "backlog ", ""),
                ("drain_s", "drained in ", " s"),
            ],
            _ => &[],
        };
        let mut parts = Vec::new();
        for (key, pre, post) in keys {
            match self.get(key) {
                Some(Value::Number(n)) => {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    let shown = if *post == " jobs/s" { format!("{f:.0}") } else { format!("{f}") };
                    parts.push(format!("{pre}{shown}{post}"));
                }
                _ => parts.push(format!("{pre}-{post}")),
            }
        }
        parts.join(" · ")
    }

    /// One line for stderr as each scenario ends.
    pub(super) fn summary_line(&self) -> String {
        format!("{}: {} ({})", self.scenario, self.headline(), self.check_text())
    }

    fn check_text(&self) -> String {
        match self.get("check") {
            Some(Value::String(s)) => s.clone(),
            _ => "unchecked".into(),
        }
    }
}

/// The human table of all scenarios.
pub(super) fn table(ctx: &Ctx, reports: &[Report]) -> String {
    let mut out = String::new();
    // Values as the last scenario read them (some are only readable once a server ran).
    let durability: Vec<String> = ctx
        .db
        .durability()
        .iter()
        .map(|(k, v)| {
            let v = reports.iter().rev().find_map(|r| r.get(k).filter(|v| !v.is_null())).unwrap_or(v);
            format!("{k}={}", plain(v))
        })
        .collect();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "sundial bench · db {} ({}) · git {} · {} cores",
        ctx.db.display(),
        durability.join(", "),
        ctx.git_rev,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let _ = writeln!(out, "{:<13} {:>8}  {:<70} check", "scenario", "n", "result");
    for r in reports {
        let n = r.get("n").map(plain).unwrap_or_default();
        let _ = writeln!(out, "{:<13} {:>8}  {:<70} {}", r.scenario, n, r.headline(), r.check_text());
    }
    out
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
