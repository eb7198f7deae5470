//! sundial-worker: the worker SDK.
//!
//! Implement [`Handler`] for a type, register it under a name on a [`Worker`], and start the
//! worker against a server. The worker claims runs of its handlers, heartbeats their leases,
//! stops a run when its timeout passes, when it is cancelled, or when the lease cannot be
//! renewed in time (self-fencing), and completes each run with its `(worker_id, attempt)`.

pub mod protocol;
pub mod transport;
