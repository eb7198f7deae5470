//! sundial-core: the domain, the triggers, the `Store` trait with its SQLite and PostgreSQL
//! implementations, and the background loops (scheduler, reaper) every node runs.

pub mod clock;
pub mod domain;
pub mod schedule;
pub mod attempt;
pub mod overlap;
pub mod store;
pub mod dispatcher;
pub mod metrics;
pub mod reaper;
pub mod scheduler;
