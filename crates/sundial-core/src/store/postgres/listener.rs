//! PostgreSQL: LISTEN/NOTIFY wake-ups for idle claimers on every node.

use super::*;

/// The notification channel of [`PostgresStore::listen_runs_ready`]; the payload is the schema.
pub(super) const READY_CHANNEL: &str = "sundial_runs_ready";

/// Wake-ups for idle claimers: see [`PostgresStore::listen_runs_ready`].
pub struct RunsReadyListener {
    pub(super) listener: sqlx::postgres::PgListener,
    pub(super) schema: String,
    /// The payloads (schemas) of the notices `recv` passed over, in order, so tests can check
    /// which notice a return came from.
    #[cfg(feature = "testing")]
    pub(super) skipped: Vec<String>,
}

impl std::fmt::Debug for RunsReadyListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunsReadyListener").field("schema", &self.schema).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Wakeups for RunsReadyListener {
    async fn recv(&mut self) -> Result<()> {
        RunsReadyListener::recv(self).await
    }
}

impl RunsReadyListener {
    /// Waits for the next notice. Several notices may arrive as one, and a lost connection
    /// (reconnected on the next call) also returns, since notices sent meanwhile are lost: a
    /// caller treats every return as "look now", never as a promise that a run is there.
    pub async fn recv(&mut self) -> Result<()> {
        loop {
            match self.listener.try_recv().await.map_err(db_err)? {
                None => return Ok(()),
                Some(n) if n.payload() == self.schema => {
                    // Drain what is already buffered: one wake-up for a burst.
                    while self.listener.next_buffered().is_some() {}
                    return Ok(());
                }
                #[cfg(feature = "testing")]
                Some(n) => self.skipped.push(n.payload().to_string()),
                #[cfg(not(feature = "testing"))]
                Some(_) => {}
            }
        }
    }

    /// The schemas of the other schemas' notices `recv` passed over so far, oldest first (a
    /// test hook: a notice of this schema that arrived before them would have ended `recv`
    /// before they were seen).
    #[cfg(feature = "testing")]
    pub fn skipped_schemas(&self) -> &[String] {
        &self.skipped
    }
}
