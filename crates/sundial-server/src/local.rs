//! The in-process worker transport: `serve --workers N` runs the SDK's `Worker` against the
//! same handler functions the HTTP routes call, without a socket in between.

use crate::api::workers::{do_claim, do_complete, do_heartbeat, do_register};
use crate::auth::Namespaces;
use crate::error::ApiError;
use crate::state::AppState;
use sundial_worker::protocol::*;
use sundial_worker::transport::{Transport, TransportError};

/// Calls the API's worker-protocol functions directly.
pub struct LocalTransport {
    state: AppState,
}

impl LocalTransport {
    /// A transport into this node.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn map(e: ApiError) -> TransportError {
    match (e.status.as_u16(), e.code) {
        (409, "stale_attempt") => TransportError::StaleAttempt(e.message),
        (404, _) => TransportError::NotFound(e.message),
        (s, _) if s >= 500 || s == 429 => TransportError::Unavailable(e.message),
        _ => TransportError::Rejected(e.message),
    }
}

#[async_trait::async_trait]
impl Transport for LocalTransport {
    async fn register(&self, req: &RegisterRequest) -> Result<Registered, TransportError> {
        // Held across the store call, so a remote request that names this worker as soon as it is
        // listed waits for it to be known as local instead of slipping through.
        let mut local = self.state.local_workers.lock().await;
        let registered = do_register(&self.state, req.clone(), &Namespaces::All).await.map_err(map)?;
        local.insert(registered.id.clone());
        Ok(registered)
    }
    async fn claim(&self, worker_id: &str, req: &ClaimRequest) -> Result<ClaimResponse, TransportError> {
        do_claim(&self.state, worker_id, req.clone()).await.map_err(map)
    }
    async fn heartbeat(&self, worker_id: &str, req: &HeartbeatRequest) -> Result<HeartbeatResponse, TransportError> {
        do_heartbeat(&self.state, worker_id, req.clone()).await.map_err(map)
    }
    async fn complete(&self, run_id: &str, req: &CompleteRequest) -> Result<(), TransportError> {
        do_complete(&self.state, run_id, req.clone()).await.map(|_| ()).map_err(map)
    }
    async fn deregister(&self, worker_id: &str) -> Result<(), TransportError> {
        self.state.store.worker_deregister(worker_id, self.state.clock.now()).await.map_err(|e| map(e.into()))
    }
}
