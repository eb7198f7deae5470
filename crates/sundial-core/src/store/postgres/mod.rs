//! The PostgreSQL store (placeholder until the PostgreSQL work lands).

use super::*;

/// The PostgreSQL-backed [`Store`].
#[derive(Debug, Clone)]
pub struct PostgresStore;

impl PostgresStore {
    /// Connects and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        Err(StoreError::Internal(format!("PostgreSQL store not built yet ({url})")))
    }
}
