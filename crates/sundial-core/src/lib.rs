//! sundial-core: the domain, the triggers, the `Store` trait with its SQLite and PostgreSQL
//! implementations, and the background loops (scheduler, reaper) every node runs.

pub mod attempt;
pub mod clock;
pub mod dispatcher;
pub mod domain;
pub mod metrics;
pub mod overlap;
pub mod reaper;
pub mod schedule;
pub mod scheduler;
pub mod store;
