//! SQLite: workers. Registering, deregistering and forgetting them are single statements
//! written once (`store::writes`); here is the sign of life as the claim calls it.

use super::*;

/// [`Writes::touch_worker`], as the claim calls it.
pub(super) async fn touch_worker(tx: &mut Tx, id: &str, now: Timestamp) -> Result<WorkerScope> {
    Shared::touch_worker(tx, id, now).await
}
