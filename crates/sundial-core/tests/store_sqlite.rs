//! The `Store` conformance suite against SQLite: every case on a fresh database file, opened
//! twice (two handles on one file, as two processes would).

use std::sync::Mutex;
use sundial_core::store::SharedStore;

/// Temp dirs live until the test process exits (the handles may outlive a case's future).
static DIRS: Mutex<Vec<tempfile::TempDir>> = Mutex::new(Vec::new());

async fn open() -> (SharedStore, SharedStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(dir);
    let store = sundial_core::store::open(&url).await.expect("open sqlite store");
    let other = sundial_core::store::open(&url).await.expect("open a second handle");
    (store, other)
}

sundial_core::store_conformance!(open);
