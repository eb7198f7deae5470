//! The domain words of DESIGN.md as types: job, trigger, run, worker, lease, limit.
//!
//! These types are also the wire shapes of API.md: a [`Job`], [`Run`] or [`Worker`] serializes
//! to exactly the JSON the HTTP API returns, so there is one definition of each field.

pub mod calendar;
pub mod duration;
pub mod job;
pub mod limit;
pub mod run;
pub mod stats;
pub mod trigger;
pub mod validate;
pub mod worker;

pub use calendar::{BackfillOutcome, BackfillRequest, CalendarDef, CalendarRequest};
pub use job::{Job, JobSpec, Overlap, RetryPolicy};
pub use limit::{Limit, LimitBounds, LimitDef, LimitKey, Rate};
pub use run::{Attempt, AttemptState, Lease, Run, RunState};
pub use stats::{HandlerQueue, RunBucket};
pub use trigger::{Misfire, Trigger, TriggerKind, TriggerSpec};
pub use validate::FieldError;
pub use worker::{Worker, WorkerState};

/// A new opaque, time-ordered identifier (UUIDv7), used for jobs, triggers, runs and workers.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Timestamps are UTC instants everywhere; the store keeps them as microseconds since the epoch.
pub type Timestamp = chrono::DateTime<chrono::Utc>;
