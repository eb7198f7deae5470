//! The scheduler turns due triggers into pending runs. Every node runs one; there is no
//! leader. [`Store::trigger_fire_due`](crate::store::Store::trigger_fire_due) creates the runs
//! and advances each trigger in one transaction under `UNIQUE(trigger_id, fire_time)`, so
//! schedulers racing on one database cannot fire a due time twice (guarantee 2).
//!
//! [`Scheduler::tick`] is one pass at a given `now` (what tests drive with a manual clock);
//! [`Scheduler::run`] repeats it, sleeping until the next due time or a change signal.

use crate::clock::SharedClock;
use crate::signals::Signals;
use crate::store::{FireReport, Result, SharedStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Fire times more than this late are misfires.
    pub misfire_threshold: Duration,
    /// Triggers per transaction.
    pub batch: u32,
    /// Longest sleep between looks at the store (catches triggers made by other nodes).
    pub max_idle: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { misfire_threshold: Duration::from_secs(60), batch: 500, max_idle: Duration::from_secs(1) }
    }
}

/// Fires due triggers.
pub struct Scheduler {
    store: SharedStore,
    clock: SharedClock,
    signals: Arc<Signals>,
    config: SchedulerConfig,
}

impl Scheduler {
    /// A scheduler over `store`.
    pub fn new(store: SharedStore, clock: SharedClock, signals: Arc<Signals>, config: SchedulerConfig) -> Self {
        Self { store, clock, signals, config }
    }

    /// One pass: fires everything due at the clock's `now` (in batches) and wakes claimers.
    pub async fn tick(&self) -> Result<FireReport> {
        let mut total = FireReport::default();
        loop {
            let r = self
                .store
                .trigger_fire_due(self.clock.now(), self.config.batch, self.config.misfire_threshold)
                .await
                .inspect_err(|_| crate::metrics::store_error())?;
            total.triggers += r.triggers;
            total.runs_pending += r.runs_pending;
            total.runs_skipped += r.runs_skipped;
            total.runs_cancel_requested += r.runs_cancel_requested;
            if r.runs_pending > 0 {
                self.signals.runs_ready.notify_waiters();
            }
            crate::metrics::fired(&r);
            for m in &r.misfires {
                crate::metrics::misfired(m.policy.as_str(), m.count);
                tracing::warn!(
                    policy = m.policy.as_str(),
                    job_id = %m.job_id,
                    trigger_id = %m.trigger_id,
                    missed = m.count,
                    "trigger misfired"
                );
            }
            total.misfires.extend(r.misfires);
            if r.triggers < self.config.batch as u64 {
                return Ok(total);
            }
        }
    }

    /// Runs until `shutdown`, sleeping until the next due time between passes.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut outage = crate::metrics::Outage::default();
        while !shutdown.is_cancelled() {
            let changed = self.signals.triggers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let pass = match self.tick().await {
                Ok(_) => self.store.trigger_next_due().await.inspect_err(|_| crate::metrics::store_error()),
                Err(e) => Err(e),
            };
            outage.observe("scheduler", pass.as_ref().map(|_| ()));
            let wake = match pass {
                Ok(next) => {
                    backoff = Duration::from_millis(100);
                    let idle = self.clock.now() + chrono::Duration::from_std(self.config.max_idle).unwrap_or_default();
                    next.map_or(idle, |n| n.min(idle))
                }
                Err(_) => {
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    self.clock.now() + chrono::Duration::from_std(backoff).unwrap_or_default()
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut changed => {}
                _ = self.clock.sleep_until(wake) => {}
            }
        }
    }
}
