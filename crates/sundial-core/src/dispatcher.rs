//! The dispatcher hands pending runs to workers: a claim takes up to `max` due runs of the
//! worker's handlers in one statement, and when none is due it long-polls, woken by an
//! in-process signal the moment runs become pending (or at the next retry's due time), not by
//! tight polling. A slow poll remains as the safety net for runs made by other nodes.

use crate::clock::SharedClock;
use crate::domain::Timestamp;
use crate::signals::{Event, Signals};
use crate::store::{ClaimParams, ClaimedRun, Result, SharedStore};
use std::sync::Arc;
use std::time::Duration;

/// Claims runs for workers.
#[derive(Clone)]
pub struct Dispatcher {
    store: SharedStore,
    clock: SharedClock,
    signals: Arc<Signals>,
    lease: Duration,
    poll: Duration,
}

impl Dispatcher {
    /// A dispatcher granting leases of `lease`; `poll` is the safety-net re-check interval.
    pub fn new(store: SharedStore, clock: SharedClock, signals: Arc<Signals>, lease: Duration, poll: Duration) -> Self {
        Self { store, clock, signals, lease, poll }
    }

    /// The lease length granted.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims up to `max` runs for `worker_id`, waiting up to `wait` for one to become due.
    /// Returns an empty list when the wait ends with nothing due, and how long it waited
    /// before the claim that succeeded (measured on the monotonic clock).
    pub async fn claim(&self, worker_id: &str, max: u32, wait: Duration) -> Result<(Vec<ClaimedRun>, Duration)> {
        let started = std::time::Instant::now();
        let deadline = self.clock.now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
        loop {
            // Register interest before looking, so a signal between the look and the wait is kept.
            let notified = self.signals.runs_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now();
            let waited = started.elapsed();
            let claim = self.signals.next_claim();
            let runs = self
                .store
                .run_claim(&ClaimParams { worker_id: worker_id.to_string(), max, lease: self.lease, now })
                .await
                .inspect_err(|_| crate::metrics::store_error())?;
            crate::metrics::claimed(&runs, now);
            if !runs.is_empty() || now >= deadline {
                if !runs.is_empty() && runs.len() as u32 == max {
                    // There may be more: let another idle claimer look too.
                    self.signals.runs_ready.notify_one();
                }
                return Ok((runs, waited));
            }
            let wake = self.next_wake(now, deadline).await?;
            self.signals.emit(Event::ClaimParked { claim });
            tokio::select! {
                _ = &mut notified => self.signals.emit(Event::ClaimWokenBySignal),
                _ = self.clock.sleep_until(wake) => {}
            }
        }
    }

    async fn next_wake(&self, now: Timestamp, deadline: Timestamp) -> Result<Timestamp> {
        let poll = now + chrono::Duration::from_std(self.poll).unwrap_or(chrono::Duration::MAX);
        let mut wake = poll.min(deadline);
        // A retry due later wakes us exactly then; a due run of a handler we don't serve
        // (next <= now) must not make us spin.
        if let Some(next) = self.store.run_next_pending(now).await? {
            if next > now && next < wake {
                wake = next;
            }
        }
        Ok(wake)
    }
}
