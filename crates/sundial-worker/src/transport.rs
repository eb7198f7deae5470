//! How a worker reaches the server. [`HttpTransport`](crate::http::HttpTransport) speaks the HTTP
//! worker protocol; the server's in-process pool implements this same trait by calling the
//! store directly, so `serve --workers N` runs exactly the worker code remote workers run.

use crate::protocol::*;

/// Transport failures, as the worker loop needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The run is no longer held by this `(worker_id, attempt)` (HTTP 409 `stale_attempt`).
    #[error("stale attempt: {0}")]
    StaleAttempt(String),
    /// The server does not know this worker or run (HTTP 404), e.g. after deregistering.
    #[error("not found: {0}")]
    NotFound(String),
    /// Network trouble or a 5xx: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The server refused the request (another 4xx).
    #[error("rejected: {0}")]
    Rejected(String),
}

/// The worker protocol, transport-neutral.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// `POST /v1/workers`.
    async fn register(&self, req: &RegisterRequest) -> Result<Registered, TransportError>;
    /// `POST /v1/workers/{id}/claim` (long-polls up to `req.wait`).
    async fn claim(&self, worker_id: &str, req: &ClaimRequest) -> Result<ClaimResponse, TransportError>;
    /// `POST /v1/workers/{id}/heartbeat`.
    async fn heartbeat(&self, worker_id: &str, req: &HeartbeatRequest) -> Result<HeartbeatResponse, TransportError>;
    /// `POST /v1/runs/{id}/complete`.
    async fn complete(&self, run_id: &str, req: &CompleteRequest) -> Result<(), TransportError>;
    /// `DELETE /v1/workers/{id}`.
    async fn deregister(&self, worker_id: &str) -> Result<(), TransportError>;
}
