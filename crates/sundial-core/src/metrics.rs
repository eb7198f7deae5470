//! sundial's metric families (all named `sundial_…`): the catalogue every node describes at
//! start, and the points where scheduler, dispatcher, reaper and API count what happened, so
//! every skip, misfire, timeout and exhausted retry shows in `/metrics` (guarantee 4).
//!
//! The catalogue [`FAMILIES`] is the one list: [`describe_all`] gives each family its `# HELP`,
//! and the server's `/metrics` writes `# HELP`/`# TYPE` for families with no series yet, so a
//! fresh node shows every family (API.md round 2, "Metrics at start").

use crate::domain::Run;
use crate::domain::Timestamp;
use crate::store::{ClaimedRun, FireReport, ReapReport};

/// What kind of series a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value read at scrape time.
    Gauge,
    /// Observations in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The Prometheus `# TYPE` word.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Its name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels (empty for an unlabelled family, which reads 0 from start).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Family {
    Family { name, kind, labels, help }
}

/// Due → start lag of claimed runs.
pub const RUN_START_LAG: &str = "sundial_run_start_lag_seconds";
/// Start → finish of finished attempts that end a run.
pub const RUN_DURATION: &str = "sundial_run_duration_seconds";

/// Every family a node exposes besides the Kafka ones (described by `sundial-ingest`).
pub const FAMILIES: &[Family] = &[
    family(
        RUN_START_LAG,
        Kind::Histogram,
        &["handler"],
        "Seconds from a run's scheduled_for to the claim that started it.",
    ),
    family(
        RUN_DURATION,
        Kind::Histogram,
        &["handler", "state"],
        "Seconds from a run's start to its end, by final state.",
    ),
    family("sundial_runs_pending", Kind::Gauge, &["handler"], "Runs waiting in state pending, read at scrape time."),
    family("sundial_runs_finished_total", Kind::Counter, &["handler", "state"], "Runs that reached a final state."),
    family("sundial_http_requests_total", Kind::Counter, &["route", "status"], "HTTP requests answered, by route."),
    family(
        "sundial_http_request_duration_seconds",
        Kind::Histogram,
        &["route"],
        "Seconds spent answering HTTP requests, by route.",
    ),
    family("sundial_workers", Kind::Gauge, &["state"], "Registered workers by state (active, draining, dead)."),
    family(
        "sundial_leases_expired_total",
        Kind::Counter,
        &[],
        "Attempts whose lease expired (worker died, hung or was cut off) and were recovered.",
    ),
    family(
        "sundial_completions_stale_total",
        Kind::Counter,
        &[],
        "Completions rejected with 409 stale_attempt (the run was no longer the worker's).",
    ),
    family(
        "sundial_trigger_misfires_total",
        Kind::Counter,
        &["policy"],
        "Due times found later than the misfire threshold, by misfire policy.",
    ),
    family(
        "sundial_store_errors_total",
        Kind::Counter,
        &[],
        "Store calls that failed (database unreachable or erroring).",
    ),
    family("sundial_limit_held_total", Kind::Counter, &[], "Runs claims passed over because a limit held them back."),
    family("sundial_limits", Kind::Gauge, &[], "Limits defined."),
    family("sundial_runs_created_total", Kind::Counter, &["state"], "Runs the scheduler created from triggers."),
    family("sundial_trigger_fires_total", Kind::Counter, &[], "Trigger advances made by scheduler passes."),
    family("sundial_workers_dead_total", Kind::Counter, &[], "Workers declared dead after missing heartbeats."),
    family("sundial_runs_claimed_total", Kind::Counter, &[], "Runs handed to workers."),
    family("sundial_store_up", Kind::Gauge, &[], "1 when the last scrape could read the store, else 0."),
    family("sundial_runs", Kind::Gauge, &["state"], "Runs stored, by state, read at scrape time."),
    family("sundial_runs_due", Kind::Gauge, &[], "Pending runs already due, read at scrape time."),
    family(
        "sundial_runs_oldest_due_wait_seconds",
        Kind::Gauge,
        &[],
        "Seconds the oldest due pending run has waited, read at scrape time.",
    ),
    family("sundial_jobs", Kind::Gauge, &[], "Jobs stored, read at scrape time."),
    family("sundial_triggers_active", Kind::Gauge, &[], "Triggers with a fire left, read at scrape time."),
    family(
        "sundial_jobs_submitted_total",
        Kind::Counter,
        &["outcome"],
        "Jobs accepted over HTTP (created, replay, batch).",
    ),
    family("sundial_group_commit_size", Kind::Histogram, &[], "Submissions or completions stored per transaction."),
];

/// Gives every family its `# HELP` and puts unlabelled counters at 0, so they show from start.
/// Call once a recorder is installed.
pub fn describe_all() {
    for f in FAMILIES {
        match f.kind {
            Kind::Counter => metrics::describe_counter!(f.name, f.help),
            Kind::Gauge => metrics::describe_gauge!(f.name, f.help),
            Kind::Histogram => metrics::describe_histogram!(f.name, f.help),
        }
        if f.labels.is_empty() && f.kind == Kind::Counter {
            metrics::counter!(f.name).absolute(0);
        }
    }
}

/// Counts what a scheduler pass created.
pub fn fired(r: &FireReport) {
    if r.runs_pending > 0 {
        metrics::counter!("sundial_runs_created_total", "state" => "pending").increment(r.runs_pending);
    }
    if r.runs_skipped > 0 {
        metrics::counter!("sundial_runs_created_total", "state" => "skipped").increment(r.runs_skipped);
    }
    if r.triggers > 0 {
        metrics::counter!("sundial_trigger_fires_total").increment(r.triggers);
    }
}

/// Counts misfired due times under `policy` (`fire_once`, `skip`, `catch_up`).
pub fn misfired(policy: &str, n: u64) {
    metrics::counter!("sundial_trigger_misfires_total", "policy" => policy.to_string()).increment(n);
}

/// Counts what a reaper pass settled. Runs it finished are counted by [`finished`] once the
/// caller has read them back.
pub fn reaped(r: &ReapReport) {
    metrics::counter!("sundial_leases_expired_total").increment(r.expired.len() as u64);
    metrics::counter!("sundial_workers_dead_total").increment(r.workers_dead);
}

/// Observes the due → start lag of runs just claimed at `now`.
pub fn claimed(runs: &[ClaimedRun], now: Timestamp) {
    if runs.is_empty() {
        return;
    }
    metrics::counter!("sundial_runs_claimed_total").increment(runs.len() as u64);
    for r in runs {
        metrics::histogram!(RUN_START_LAG, "handler" => r.handler.clone())
            .record(seconds_between(r.scheduled_for, now));
    }
}

/// Counts a run that reached a final state, with its duration when it started.
pub fn finished(run: &Run) {
    if !run.state.is_finished() {
        return;
    }
    let state = run.state.as_str();
    metrics::counter!("sundial_runs_finished_total", "handler" => run.handler.clone(), "state" => state).increment(1);
    if let (Some(start), Some(end)) = (run.started_at, run.finished_at) {
        metrics::histogram!(RUN_DURATION, "handler" => run.handler.clone(), "state" => state)
            .record(seconds_between(start, end));
    }
}

/// Counts a completion refused as stale.
pub fn completion_stale() {
    metrics::counter!("sundial_completions_stale_total").increment(1);
}

/// Counts a failed store call.
pub fn store_error() {
    metrics::counter!("sundial_store_errors_total").increment(1);
}

/// Counts runs a claim passed over because of a limit.
pub fn limit_held(n: u64) {
    if n > 0 {
        metrics::counter!("sundial_limit_held_total").increment(n);
    }
}

/// Tells a store outage from a passing error in a background loop: logs one line when its
/// passes start failing (with the error) and one when they succeed again, not one per pass.
#[derive(Debug, Default)]
pub struct Outage {
    failing: u64,
}

impl Outage {
    /// Records one pass of loop `name`.
    pub fn observe<E: std::fmt::Display>(&mut self, name: &str, pass: Result<(), E>) {
        match pass {
            Ok(()) if self.failing > 0 => {
                tracing::info!(r#loop = name, failed_passes = self.failing, "store reachable again");
                self.failing = 0;
            }
            Ok(()) => {}
            Err(e) => {
                if self.failing == 0 {
                    tracing::error!(r#loop = name, error = %e, "store unavailable; retrying");
                }
                self.failing += 1;
            }
        }
    }

    /// Whether the last pass failed.
    pub fn is_failing(&self) -> bool {
        self.failing > 0
    }
}

/// `to - from` in seconds, never negative (a run claimed before it was due has no lag).
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    ((to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(f.name.starts_with("sundial_"), "{}", f.name);
            assert!(seen.insert(f.name), "{} listed twice", f.name);
            assert_eq!(
                f.kind == Kind::Counter,
                f.name.ends_with("_total"),
                "{}: counters and only counters end _total",
                f.name
            );
        }
    }

    #[test]
    fn lag_is_never_negative() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-24T08:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(seconds_between(t, t + chrono::Duration::milliseconds(1500)), 1.5);
        assert_eq!(seconds_between(t, t - chrono::Duration::seconds(3)), 0.0);
    }
}
