//! What every request handler shares.

use crate::batcher::Batcher;
use std::sync::Arc;
use std::time::Duration;
use sundial_core::clock::SharedClock;
use sundial_core::dispatcher::Dispatcher;
use sundial_core::domain::Run;
use sundial_core::signals::Signals;
use sundial_core::store::{Completion, JobCreate, JobCreated, SharedStore};

/// Server settings that handlers read.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Lease granted to workers.
    pub lease: Duration,
    /// Bearer tokens; empty = no auth.
    pub tokens: Vec<String>,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Dead workers silent longer than this are no longer listed.
    pub worker_retention: Duration,
}

/// Shared state.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: SharedStore,
    /// The clock.
    pub clock: SharedClock,
    /// Wake-ups.
    pub signals: Arc<Signals>,
    /// Claims.
    pub dispatcher: Dispatcher,
    /// Group commit for submissions.
    pub submissions: Batcher<JobCreate, JobCreated>,
    /// Group commit for completions.
    pub completions: Batcher<Completion, Run>,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Prometheus renderer.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
}

impl AppState {
    /// Builds the state and starts its batchers.
    pub fn new(store: SharedStore, clock: SharedClock, signals: Arc<Signals>, config: ApiConfig) -> Self {
        let dispatcher =
            Dispatcher::new(store.clone(), clock.clone(), signals.clone(), config.lease, Duration::from_secs(1));
        // PostgreSQL commits from several connections at once; SQLite has one writer.
        let writers = if store.capabilities().multi_node { 4 } else { 1 };
        let s = store.clone();
        let c = clock.clone();
        let submissions = Batcher::start(1000, writers, move |items| {
            let s = s.clone();
            let now = c.now();
            async move { s.job_create_many(items, now).await }
        });
        let s = store.clone();
        let c = clock.clone();
        let completions = Batcher::start(1000, writers, move |items| {
            let s = s.clone();
            let now = c.now();
            async move { s.run_complete_many(items, now).await }
        });
        Self {
            store,
            clock,
            signals,
            dispatcher,
            submissions,
            completions,
            config: Arc::new(config),
            metrics: crate::metrics::prometheus_handle(),
        }
    }
}
