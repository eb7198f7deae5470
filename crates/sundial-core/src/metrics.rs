//! Metric names (all start with `sundial_`) and the points where run outcomes are counted, so
//! every skip, misfire, timeout and exhausted retry shows in `/metrics` (guarantee 4).

use crate::store::{FireReport, ReapReport};

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

/// Counts what a reaper pass settled.
pub fn reaped(r: &ReapReport) {
    for (_, state) in &r.expired {
        metrics::counter!("sundial_leases_expired_total", "to" => state.as_str()).increment(1);
    }
    for (_, state) in &r.timed_out {
        metrics::counter!("sundial_runs_timed_out_by_server_total", "to" => state.as_str()).increment(1);
    }
    if r.workers_dead > 0 {
        metrics::counter!("sundial_workers_dead_total").increment(r.workers_dead);
    }
}

/// Counts a worker-reported attempt end and what it became.
pub fn completed(reported: &str, became: &str) {
    metrics::counter!("sundial_attempts_completed_total", "reported" => reported.to_string(), "state" => became.to_string())
        .increment(1);
}
