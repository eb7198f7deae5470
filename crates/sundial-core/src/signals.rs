//! In-process wake-ups between the parts of one node (API, ingest, scheduler, reaper,
//! dispatcher), and the events background paths report so tests wait for them instead of
//! sleeping.
//!
//! Events are a broadcast: sending costs next to nothing when nobody listens (production), and
//! a test subscribes with [`Signals::events`] before the action whose effect it waits for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Something a background path did that a test may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A claim found nothing due and parked. `claim` is the sequence number of its store query
    /// ([`Signals::next_claim`]), so a test can ask for a claim that looked after a given
    /// commit.
    ClaimParked {
        /// Sequence number of the claim query that found nothing.
        claim: u64,
    },
    /// A parked claim was woken by [`Signals::runs_ready`] (not by its timer).
    ClaimWokenBySignal,
    /// The Kafka pipeline found the store unavailable and will retry the same batch.
    IngestStoreRetry,
}

/// In-process wake-ups shared by the API, ingest, scheduler, reaper and dispatcher, and the
/// events they report.
#[derive(Debug)]
pub struct Signals {
    /// Runs became claimable (created, retried, unblocked, resumed).
    pub runs_ready: Notify,
    /// Triggers were created or changed, so the scheduler's next due time may be earlier.
    pub triggers_changed: Notify,
    events: broadcast::Sender<Event>,
    claims: AtomicU64,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            runs_ready: Notify::new(),
            triggers_changed: Notify::new(),
            events: broadcast::channel(1024).0,
            claims: AtomicU64::new(0),
        }
    }
}

impl Signals {
    /// Reports `event` to whoever listens (nobody, outside tests).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Starts listening: events emitted from now on.
    pub fn events(&self) -> Events {
        Events(self.events.subscribe())
    }

    /// Numbers a claim query; every claim takes the next number before it looks.
    pub fn next_claim(&self) -> u64 {
        self.claims.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The number of the latest claim query started (0 before any).
    pub fn claims_started(&self) -> u64 {
        self.claims.load(Ordering::SeqCst)
    }
}

/// A subscription to [`Event`]s.
pub struct Events(broadcast::Receiver<Event>);

impl Events {
    /// Waits up to `timeout` for an event matching `want`, skipping others. Panics naming
    /// `what` on timeout (this is for tests).
    pub async fn wait_for(&mut self, what: &str, timeout: Duration, want: impl Fn(&Event) -> bool) -> Event {
        let found = async {
            loop {
                match self.0.recv().await {
                    Ok(e) if want(&e) => return e,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("signals dropped while waiting for {what}"),
                }
            }
        };
        match tokio::time::timeout(timeout, found).await {
            Ok(e) => e,
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}
