//! sundial-core: the domain, the triggers, the `Store` trait with its SQLite and PostgreSQL
//! implementations, and the background loops (scheduler, reaper) every node runs.
//!
//! # Layout
//! Modules depend downwards only: `domain` ← `schedule` ← `store` ← the loops.
//! * [`domain`] — DESIGN.md's words as types (job, trigger, run, worker, lease) and their
//!   validation with field paths; also the wire shapes of API.md.
//! * [`schedule`] — pure schedule arithmetic: next fire times (cron in a zone, intervals), the
//!   misfire plan, and [`schedule::validate_job`], the full check every entry point uses.
//! * [`attempt`], [`overlap`] — pure rules: how an attempt ends (retry, backoff, final state) and
//!   what the overlap policy does with a new run.
//! * [`store`] — the [`Store`](store::Store) trait and its two backends; each keeps the rules
//!   above and adds only SQL. The conformance suite (feature `conformance`) runs every case on
//!   both.
//! * [`scheduler`], [`dispatcher`], [`reaper`] — a node's loops: fire due triggers, hand pending
//!   runs to workers (long-poll), expire leases and silent workers.
//! * [`signals`] — in-process wake-ups between those parts, and the events tests wait for.
//! * [`clock`] — injected time (`ManualClock` in tests); [`input`] — reading client input the
//!   same way for HTTP and Kafka; [`metrics`] — metric names.
//! * `testing` (feature `testing`) — `eventually`, the bounded wait tests share.
//!
//! # The four guarantees (DESIGN.md), where each is kept, and the test that fails without it
//!
//! | Guarantee | Kept by | Fails without it |
//! |---|---|---|
//! | 1. An accepted submission is durable (2xx only after commit) | [`Store::job_create_many`](store::Store::job_create_many) returns after its transaction commits; the server's group commit answers each request after that | `create_returns_after_commit_and_is_visible_to_another_handle` (conformance, both stores); `accepted_jobs_survive_sigkill_of_the_server_and_each_runs_once` (`sundial` e2e, real SIGKILL) |
//! | 2. A trigger fires once per due time | [`Store::trigger_fire_due`](store::Store::trigger_fire_due): runs and the trigger's advance in one transaction, under `UNIQUE(trigger_id, fire_time)`; [`schedule::plan`] decides the due times | `concurrent_fire_due_on_two_handles_creates_each_run_once` (conformance); `two_scheduler_loops_on_one_file_fire_each_second_exactly_once`; `many_schedulers_and_claimers_hand_out_each_fire_once` (PostgreSQL) |
//! | 3. At-least-once execution, fenced by `(worker_id, attempt)` | [`Store::run_complete_many`](store::Store::run_complete_many) and [`Store::run_heartbeat`](store::Store::run_heartbeat) change a run only while it is `running` under the caller's token; [`attempt::settle`] decides retries | `complete_with_stale_attempt_is_rejected_and_changes_nothing`, `second_complete_of_finished_run_is_stale` (conformance); `fencing_a_late_complete_from_a_lost_worker_is_409_and_the_result_is_the_new_holders` (server); `partitioned_worker_stops_its_run_before_the_lease_ends` (`sundial`) |
//! | 4. Nothing is dropped silently | [`schedule::plan`] (misfires become runs with a reason), [`overlap::decide`] (skips are `skipped` runs), [`attempt::settle`] (timeouts, exhausted retries), the [`reaper`] (expired leases) | `misfire_skip_records_a_skipped_run_with_reason`, `overlap_skip_records_skipped_run_while_one_runs`, `failed_attempt_is_retried_after_backoff_then_exhausts_to_failed_with_reason`, `expired_lease_on_last_attempt_ends_failed_with_reason_lease_expired` (conformance) |

pub mod attempt;
pub mod clock;
pub mod dispatcher;
pub mod domain;
pub mod flow;
pub mod input;
pub mod metrics;
pub mod overlap;
pub mod reaper;
pub mod schedule;
pub mod scheduler;
pub mod signals;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
