//! The `Store` conformance suite: one set of behavioural cases every backend must pass.
//!
//! Each case is a `pub async fn <method>_<behaviour>(h: Harness)` in the file of its noun
//! ([`jobs`], [`triggers`], [`runs`], [`leases`], [`limits`], [`stats`], [`workers`],
//! [`calendars`]); its name states the behaviour and it fails if that behaviour breaks. A backend runs the whole suite from an integration test
//! file with one macro call:
//!
//! ```ignore
//! use sundial_core::store::SharedStore;
//!
//! /// A fresh, isolated database, opened twice (two handles on the same data).
//! async fn open() -> (SharedStore, SharedStore) { /* … */ }
//!
//! sundial_core::store_conformance!(open);
//! ```
//!
//! [`store_conformance!`](crate::store_conformance) expands into one `#[tokio::test]` per case,
//! grouped in modules by noun (`jobs::create_returns_after_commit_and_is_visible_to_another_handle`,
//! …), so `cargo test --test store_sqlite leases::` runs one noun. Race cases run on a
//! multi-threaded runtime. The calling crate needs `tokio` (with the `macros` and `rt-multi-thread`
//! features) as a dependency.
//!
//! Time never comes from a clock here: store methods take `now`, and the cases pass fixed
//! instants ([`Harness::now`] is 2026-11-24T08:00:00Z; [`Harness::t`] adds seconds to it), so
//! leases, backoffs, misfires and dead workers are tested without sleeping.
//!
//! [`Harness::other`] is a second handle on the same database: durability is checked by reading
//! back through it, and the race cases run the two handles against each other, as two scheduler
//! nodes would.
//!
//! Backends differ only through [`Store::capabilities`](super::Store::capabilities), never by
//! name; no case branches on the backend. A change to the `Store` trait or to a backend lands
//! with a case here.

pub mod calendars;
pub mod jobs;
pub mod leases;
pub mod limits;
pub mod runs;
pub mod stats;
pub mod triggers;
pub mod workers;

use super::{
    ClaimParams, ClaimedRun, Completion, FireReport, HeartbeatOutcome, JobCreate, JobCreated, JobFilter, Misfired,
    Page, ReapParams, ReapReport, RunFilter, SharedStore, StoreError,
};
use crate::domain::trigger::TriggerWire;
use crate::domain::{job::JobRequest, Job, JobSpec, Lease, Misfire, RetryPolicy, Run, RunState, Timestamp, Worker};
use std::time::Duration;

/// Lease length the cases claim and heartbeat with.
pub const LEASE: Duration = Duration::from_secs(30);
/// Misfire threshold the cases fire with (the server's default).
pub const MISFIRE_THRESHOLD: Duration = Duration::from_secs(60);
/// Silence after which the reaper marks a worker dead (2 × [`LEASE`]).
pub const DEAD_AFTER: Duration = Duration::from_secs(60);
/// Grace past a run's timeout before the reaper records `timed_out` itself.
pub const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// What every case gets: a fresh database behind two handles, and the instant the case starts at.
#[derive(Clone)]
pub struct Harness {
    /// The handle the case mostly works through.
    pub store: SharedStore,
    /// A second handle on the same database (another node, for durability and race cases).
    pub other: SharedStore,
    /// The case's starting instant: 2026-11-24T08:00:00Z.
    pub now: Timestamp,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("now", &self.now).finish_non_exhaustive()
    }
}

/// Parses an RFC 3339 instant.
pub fn instant(rfc3339: &str) -> Timestamp {
    rfc3339.parse().unwrap_or_else(|e| panic!("bad instant {rfc3339:?}: {e}"))
}

/// A job request for `handler`, every other field defaulted; fill in more with struct update
/// syntax: `JobRequest { priority: Some(5), ..job("echo") }`.
pub fn job(handler: &str) -> JobRequest {
    JobRequest { handler: handler.to_string(), ..Default::default() }
}

/// Validates a request (the cases only build valid ones).
pub fn spec(r: JobRequest) -> JobSpec {
    JobSpec::from_request(r).unwrap_or_else(|e| panic!("invalid job in a conformance case: {e}"))
}

/// A submission of `r` with no derived idempotency key.
pub fn submission(r: JobRequest) -> JobCreate {
    JobCreate { spec: spec(r), derived_idempotency_key: None }
}

/// `{"kind": "interval", "every": "<secs>s"}`.
pub fn every(secs: u64) -> TriggerWire {
    TriggerWire { kind: "interval".into(), every: Some(Duration::from_secs(secs)), ..Default::default() }
}

/// `{"kind": "once", "at": at}`.
pub fn once(at: Timestamp) -> TriggerWire {
    TriggerWire { kind: "once".into(), at: Some(at), ..Default::default() }
}

/// `{"kind": "cron", "expr": expr}` in UTC.
pub fn cron(expr: &str) -> TriggerWire {
    TriggerWire { kind: "cron".into(), expr: Some(expr.into()), ..Default::default() }
}

/// `trigger` with a misfire policy.
pub fn with_misfire(trigger: TriggerWire, misfire: Misfire) -> TriggerWire {
    TriggerWire { misfire: Some(misfire), ..trigger }
}

/// A retry policy: `max_attempts`, backoff from `initial_secs` doubling up to `max_secs`.
pub fn retry(max_attempts: u32, initial_secs: u64, max_secs: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_delay: Duration::from_secs(initial_secs),
        max_delay: Duration::from_secs(max_secs),
    }
}

/// A completion of `claimed` by `worker_id`.
pub fn completion(claimed: &ClaimedRun, worker_id: &str, state: RunState) -> Completion {
    Completion {
        lease: Lease { run_id: claimed.run_id.clone(), worker_id: worker_id.to_string(), attempt: claimed.attempt },
        state,
        output: None,
        error: None,
        no_retry: false,
    }
}

/// The `(run_id, attempt)` pairs a worker heartbeats with.
pub fn held(claims: &[&ClaimedRun]) -> Vec<(String, u32)> {
    claims.iter().map(|c| (c.run_id.clone(), c.attempt)).collect()
}

/// The ids of `runs`, sorted (for comparing sets).
pub fn sorted_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = ids.into_iter().map(str::to_string).collect();
    v.sort();
    v
}

/// Asserts `r` is `Err(StoreError::NotFound(_))`.
#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Asserts `r` is `Err(StoreError::StaleAttempt(_))`.
#[track_caller]
pub fn assert_stale<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::StaleAttempt(_)) => {}
        other => panic!("{what}: expected StaleAttempt, got {other:?}"),
    }
}

/// Asserts `r` is `Err(StoreError::Conflict { code, .. })` with this code.
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, code: &str) {
    match r {
        Err(StoreError::Conflict { code: c, .. }) if c == code => {}
        other => panic!("expected Conflict {code:?}, got {other:?}"),
    }
}

impl Harness {
    /// A harness over two handles on one fresh database.
    pub fn new(store: SharedStore, other: SharedStore) -> Self {
        Self { store, other, now: instant("2026-11-24T08:00:00Z") }
    }

    /// [`now`](Self::now) plus `secs` seconds (microsecond precision, the stores' precision).
    pub fn t(&self, secs: f64) -> Timestamp {
        self.now + chrono::TimeDelta::microseconds((secs * 1e6).round() as i64)
    }

    /// Submits one job; the store's per-item outcome.
    pub async fn submit(&self, r: JobRequest, now: Timestamp) -> Result<JobCreated, StoreError> {
        let mut out = self.store.job_create_many(vec![submission(r)], now).await.expect("job_create_many");
        assert_eq!(out.len(), 1, "one outcome per submission");
        out.remove(0)
    }

    /// Creates one job, which must be new.
    pub async fn create(&self, r: JobRequest, now: Timestamp) -> Job {
        let c = self.submit(r, now).await.expect("job created");
        assert!(c.created, "a new definition is created, not replayed");
        c.job
    }

    /// Reads a job back.
    pub async fn job(&self, id: &str, now: Timestamp) -> Job {
        self.store.job_get(id, now).await.expect("job_get")
    }

    /// Every job (all namespaces), newest first.
    pub async fn all_jobs(&self) -> Vec<Job> {
        let f = JobFilter { limit: 1000, ..Default::default() };
        self.store.job_list(&f, self.now).await.expect("job_list").items
    }

    /// Registers a worker serving `handlers`.
    pub async fn worker(&self, handlers: &[&str], now: Timestamp) -> Worker {
        let handlers: Vec<String> = handlers.iter().map(|h| h.to_string()).collect();
        self.store.worker_register("w", &handlers, 8, None, now).await.expect("worker_register")
    }

    /// Claims up to `max` runs for `worker_id` with a [`LEASE`] lease.
    pub async fn claim(&self, worker_id: &str, max: u32, now: Timestamp) -> Vec<ClaimedRun> {
        let p = ClaimParams { worker_id: worker_id.to_string(), max, lease: LEASE, now };
        self.store.run_claim(&p).await.expect("run_claim")
    }

    /// Claims exactly one run.
    pub async fn claim_one(&self, worker_id: &str, now: Timestamp) -> ClaimedRun {
        let mut got = self.claim(worker_id, 1, now).await;
        assert_eq!(got.len(), 1, "expected one claimable run at {now}, got {got:?}");
        got.remove(0)
    }

    /// Completes one attempt.
    pub async fn complete(&self, c: Completion, now: Timestamp) -> Result<Run, StoreError> {
        let mut out = self.store.run_complete_many(vec![c], now).await.expect("run_complete_many");
        assert_eq!(out.len(), 1, "one outcome per completion");
        out.remove(0)
    }

    /// Heartbeats `runs` (`(run_id, attempt)` pairs, as [`held`] gives) for `worker_id`, each as
    /// a lease of that worker, with a [`LEASE`] lease.
    pub async fn heartbeat(
        &self,
        worker_id: &str,
        runs: &[(String, u32)],
        now: Timestamp,
    ) -> Result<HeartbeatOutcome, StoreError> {
        let leases: Vec<Lease> = runs
            .iter()
            .map(|(run_id, attempt)| Lease {
                run_id: run_id.clone(),
                worker_id: worker_id.to_string(),
                attempt: *attempt,
            })
            .collect();
        self.store.run_heartbeat(worker_id, &leases, LEASE, now).await
    }

    /// One scheduler pass at `now` (limit 1000, [`MISFIRE_THRESHOLD`]).
    pub async fn fire(&self, now: Timestamp) -> FireReport {
        self.store.trigger_fire_due(now, 1000, MISFIRE_THRESHOLD).await.expect("trigger_fire_due")
    }

    /// One reaper pass at `now` ([`TIMEOUT_GRACE`], [`DEAD_AFTER`], limit 1000).
    pub async fn reap(&self, now: Timestamp) -> ReapReport {
        let p = ReapParams { now, timeout_grace: TIMEOUT_GRACE, dead_after: DEAD_AFTER, limit: 1000 };
        self.store.run_reap(&p).await.expect("run_reap")
    }

    /// Reads a run back.
    pub async fn run(&self, id: &str) -> Run {
        self.store.run_get(id).await.expect("run_get")
    }

    /// Every run of a job, oldest `scheduled_for` first (read through all pages).
    pub async fn runs(&self, job_id: &str) -> Vec<Run> {
        let mut f = RunFilter { job_id: Some(job_id.to_string()), limit: 1000, ..Default::default() };
        let mut all = Vec::new();
        loop {
            let page = self.store.run_list(&f).await.expect("run_list");
            all.extend(page.items);
            match page.next_cursor {
                Some(c) => f.cursor = Some(c),
                None => break,
            }
        }
        all.sort_by(|a, b| a.scheduled_for.cmp(&b.scheduled_for).then(a.id.cmp(&b.id)));
        all
    }
}

/// Expands into one `#[tokio::test]` per conformance case, for a backend.
///
/// `$open` names an `async fn() -> (SharedStore, SharedStore)` that opens a fresh, isolated
/// database and returns two handles on it (the second stands for another node). The tests are
/// grouped in modules by noun (`jobs`, `triggers`, `runs`, `leases`, `workers`), which
/// `use super::*`, so `$open` may be a plain name in the calling file. The calling crate needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
///
/// ```ignore
/// async fn open() -> (sundial_core::store::SharedStore, sundial_core::store::SharedStore) { todo!() }
/// sundial_core::store_conformance!(open);
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($open:path) => {
        $crate::__store_conformance_cases! { $open;
            jobs {
                current create_returns_after_commit_and_is_visible_to_another_handle,
                current idempotency_key_replay_returns_existing_job_created_false,
                current idempotency_key_with_different_definition_conflicts,
                current same_name_same_definition_is_a_replay,
                current same_name_different_definition_conflicts,
                current batch_items_stand_alone,
                current job_without_triggers_gets_one_run_due_now,
                current job_created_paused_without_triggers_holds_its_run_until_resume,
                current plain_and_named_submissions_in_one_batch_each_store_their_own_run,
                current create_dropped_part_way_leaves_the_store_writable,
                current list_is_newest_first_with_cursor_pagination_covering_all,
                current list_filters_namespace_handler_paused,
                current list_narrowed_to_a_set_of_namespaces_has_full_pages_and_follows_cursors,
                current get_derives_running_and_last_times_from_runs,
                current update_replaces_triggers,
                current update_taking_another_jobs_key_or_name_conflicts_alike,
                current delete_cancels_pending_runs_with_reason_job_deleted_and_keeps_runs_queryable,
                current pause_stops_triggers_and_claims_manual_run_still_runs,
                current pause_holds_the_retry_of_a_run_that_fails_while_paused,
                current next_fire_time_of_paused_job_shows_next_future_time,
                current pause_after_failures_pauses_the_job_when_that_many_runs_in_a_row_fail,
                current pause_after_failures_count_is_reset_by_success_and_untouched_by_cancelled_runs,
                current pause_after_failures_resume_clears_the_reason_and_resets_the_count,
                multi concurrent_failures_on_two_handles_still_pause_the_job,
                multi concurrent_create_with_one_idempotency_key_stores_one_job,
                multi concurrent_batches_racing_on_names_store_each_name_once,
            }
            triggers {
                current fire_due_creates_one_run_per_due_time_and_advances,
                multi concurrent_fire_due_on_two_handles_creates_each_run_once,
                current fire_due_cost_ignores_far_future_triggers,
                current once_trigger_fires_once_at_its_time,
                current misfire_skip_records_a_skipped_run_with_reason,
                current misfire_fire_once_records_one_run_with_count_reason,
                current misfire_catch_up_limits_and_counts,
                current misfire_note_outlives_claims_heartbeats_completions_and_retries,
                current resume_applies_misfire_policy_to_times_missed_while_paused,
                current max_fires_stops_trigger,
                current overlap_skip_records_skipped_run_while_one_runs,
                current overlap_buffer_one_holds_one_run_until_the_running_one_finishes_then_it_is_claimable,
                current overlap_cancel_other_flags_running_run_and_creates_new_pending,
            }
            runs {
                current claim_orders_by_priority_then_scheduled_for,
                current claims_take_runs_made_ready_behind_the_last_claim_at_once,
                current claim_only_returns_due_runs_of_the_workers_handlers,
                current claim_bumps_attempt_and_sets_lease,
                multi concurrent_claims_on_two_handles_hand_each_run_out_once,
                multi many_schedulers_and_claimers_hand_out_each_fire_once,
                current cancel_pending_is_immediate_and_cancel_finished_is_already_finished,
                current prune_deletes_only_finished_runs_older_than_cutoff,
                current run_list_filters_and_pagination,
                current stats_count_runs_jobs_triggers_and_workers,
                current retry_puts_a_finished_run_back_due_now_with_a_full_set_of_attempts,
                current run_list_filters_by_handler,
                current cancel_many_and_retry_many_act_on_each_run_as_one_call_would,
            }
            leases {
                current complete_with_stale_attempt_is_rejected_and_changes_nothing,
                current second_complete_of_finished_run_is_stale,
                current failed_attempt_is_retried_after_backoff_then_exhausts_to_failed_with_reason,
                current complete_timed_out_is_retried_then_the_last_ends_timed_out,
                current expired_lease_on_last_attempt_ends_failed_with_reason_lease_expired,
                current heartbeat_extends_lease_and_reports_lost_and_cancel,
                current heartbeat_from_dead_worker_revives_it_and_lists_recovered_runs_as_lost,
                current cancel_running_sets_cancel_requested_and_lease_expiry_ends_cancelled_without_retry,
                current timeout_overrun_is_recorded_timed_out_by_the_reaper,
                current attempts_record_every_attempt_with_worker_outcome_and_error,
                current attempts_of_cancelled_and_dead_worker_runs,
                current complete_marked_final_fails_at_once_and_is_not_retried,
            }
            limits {
                current limit_put_get_list_delete_round_trip,
                current runs_keep_their_jobs_keys_from_when_they_were_created,
                current claim_holds_runs_past_max_running_and_says_why,
                current lowering_max_running_stops_new_claims_until_below,
                current a_pattern_governs_each_key_separately_and_an_exact_limit_wins,
                current every_governed_key_of_a_run_must_have_room,
                current rate_window_is_exact_at_its_edges,
                current an_expired_lease_counts_until_it_is_reaped,
                current claims_take_turns_across_first_keys,
                current plain_runs_take_the_floor_turn_beside_a_backlog,
                multi concurrent_claims_on_two_handles_never_exceed_max_running,
            }
            stats {
                current stats_runs_count_finishes_and_starts_per_bucket,
                current stats_runs_measure_each_attempts_lag_from_its_own_due_time,
                current stats_handlers_count_queues_and_live_workers,
            }
            calendars {
                current calendar_put_get_list_delete_round_trip,
                current calendar_in_use_cannot_be_deleted_until_no_trigger_names_it,
                current excluded_due_times_are_not_fires,
                current calendar_change_applies_from_the_next_fire_on,
                current backfill_creates_one_run_per_due_time_once,
                current backfill_follows_window_and_calendars_not_max_fires,
                current backfill_refuses_bad_ranges_and_foreign_triggers,
                current backfill_of_a_paused_job_waits_and_follows_the_requests_overlap,
                current naming_an_unknown_calendar_refuses_that_item_only,
            }
            workers {
                current register_then_get_and_list_newest_first,
                current silent_worker_is_marked_dead_after_twice_the_lease,
                current claim_or_heartbeat_by_unknown_or_deregistered_worker_is_not_found,
                current deregistered_worker_still_completes_what_it_holds,
                current forget_dead_deletes_only_dead_workers_silent_past_the_cutoff,
                current claim_by_a_namespace_bound_worker_leases_only_runs_of_its_namespaces,
            }
        }
    };
}

/// Implementation detail of [`store_conformance!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_cases {
    ($open:path; $( $noun:ident { $( $flavor:ident $case:ident ),* $(,)? } )*) => {
        $(
            mod $noun {
                #[allow(unused_imports)]
                use super::*;
                $( $crate::__store_conformance_case!($flavor, $open, $noun, $case); )*
            }
        )*
    };
}

/// Implementation detail of [`store_conformance!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __store_conformance_case {
    (current, $open:path, $noun:ident, $case:ident) => {
        #[tokio::test]
        async fn $case() {
            let (store, other) = $open().await;
            $crate::store::conformance::$noun::$case($crate::store::conformance::Harness::new(store, other)).await;
        }
    };
    (multi, $open:path, $noun:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            let (store, other) = $open().await;
            $crate::store::conformance::$noun::$case($crate::store::conformance::Harness::new(store, other)).await;
        }
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The case functions (`pub async fn NAME(`) of a noun file.
    fn defined(src: &str) -> BTreeSet<&str> {
        src.lines().filter_map(|l| l.strip_prefix("pub async fn ")).filter_map(|l| l.split('(').next()).collect()
    }

    /// The cases [`store_conformance!`](crate::store_conformance) lists for `noun`.
    fn listed<'a>(macro_src: &'a str, noun: &str) -> BTreeSet<&'a str> {
        let start = macro_src.find(&format!("\n            {noun} {{\n")).unwrap_or_else(|| panic!("no {noun} list"));
        let block = &macro_src[start..];
        let block = &block[..block.find("\n            }").expect("list ends")];
        block.lines().skip(2).filter_map(|l| l.trim().trim_end_matches(',').split_once(' ').map(|(_, n)| n)).collect()
    }

    /// A case written but not listed would never run on either store; a listed case that is gone
    /// would not compile. This keeps the two from drifting apart, and a new noun file from being
    /// left out.
    #[test]
    fn store_conformance_runs_every_case_of_every_noun_file() {
        let this = include_str!("mod.rs");
        let start = this.find("macro_rules! store_conformance {").expect("the macro");
        let macro_src = &this[start..this.find("macro_rules! __store_conformance_cases").expect("its helper")];
        let files = [
            ("calendars", include_str!("calendars.rs")),
            ("jobs", include_str!("jobs.rs")),
            ("leases", include_str!("leases.rs")),
            ("limits", include_str!("limits.rs")),
            ("runs", include_str!("runs.rs")),
            ("stats", include_str!("stats.rs")),
            ("triggers", include_str!("triggers.rs")),
            ("workers", include_str!("workers.rs")),
        ];
        for (noun, src) in files {
            assert_eq!(defined(src), listed(macro_src, noun), "cases of {noun}.rs vs the store_conformance! list");
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/conformance");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("the conformance folder")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "mod.rs")
            .collect();
        on_disk.sort();
        let known: Vec<String> = files.iter().map(|(n, _)| format!("{n}.rs")).collect();
        assert_eq!(on_disk, known, "every noun file is checked here and listed in store_conformance!");
    }
}
