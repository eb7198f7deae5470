//! The `Store` conformance suite against SQLite: every case on a fresh database file, opened
//! twice (two handles on one file, as two processes would).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};
use sundial_core::store::SharedStore;

/// Where the test databases go: `target/tmp/store_sqlite`. Directories left by runs more than an
/// hour old are swept when this process first opens a store.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_sqlite");
        std::fs::create_dir_all(&root).expect("create the test database root");
        let stale = SystemTime::now() - Duration::from_secs(3600);
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < stale) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        root
    })
}

/// A fresh database file, opened twice. The directory outlives the case (the handles' pools may
/// still hold the file when the case's future ends).
async fn open() -> (SharedStore, SharedStore) {
    let dir = tempfile::tempdir_in(root()).expect("temp dir").keep();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let store = sundial_core::store::open(&url).await.expect("open sqlite store");
    let other = sundial_core::store::open(&url).await.expect("open a second handle");
    (store, other)
}

sundial_core::store_conformance!(open);
