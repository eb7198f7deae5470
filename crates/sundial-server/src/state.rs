//! What every request handler shares.

use crate::auth::{Namespaces, Tokens};
use crate::batcher::Batcher;
use crate::limits::{JobLimits, RateLimiter};
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
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
    /// Bearer tokens, their roles and namespaces (see [`crate::auth`]).
    pub tokens: Arc<Tokens>,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Dead workers silent longer than this are no longer listed.
    pub worker_retention: Duration,
    /// Payload size and minimum interval.
    pub job_limits: JobLimits,
    /// `--rate-limit`: requests per second per token (none = off).
    pub rate_limit: Option<NonZeroU32>,
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
    /// The tokens in force (shared with the SIGHUP reloader).
    pub tokens: Arc<Tokens>,
    /// Per-token request rate, when `--rate-limit` is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Workers this node's in-process pool registered: not remote workers, so not reachable
    /// over HTTP.
    pub local_workers: Arc<tokio::sync::Mutex<HashSet<String>>>,
    /// The namespaces of the token that registered each worker, as far as this node has seen
    /// (the store keeps them for every worker; this saves a read per worker request).
    pub worker_namespaces: Arc<Mutex<HashMap<String, Namespaces>>>,
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
            tokens: config.tokens.clone(),
            rate_limiter: config.rate_limit.map(|n| Arc::new(RateLimiter::new(n))),
            local_workers: Arc::default(),
            worker_namespaces: Arc::default(),
            config: Arc::new(config),
            metrics: crate::metrics::prometheus_handle(),
        }
    }
}
