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

/// A write dropped part-way (a claim whose caller timed out, a client that went away) never
/// leaves the store's one write connection inside a transaction nobody can end: every later
/// write still commits. Drops land at every point of the call, the start of its transaction
/// included, across timeouts from 0 to ~2 ms.
#[tokio::test]
async fn a_write_dropped_part_way_leaves_the_store_writable() {
    use sundial_core::domain::{LimitBounds, LimitKey};
    let (store, _) = open().await;
    let now = chrono::Utc::now();
    let key = LimitKey::parse("k").expect("key");
    let bounds = LimitBounds { max_running: Some(1), rate: None };
    for i in 0..400u64 {
        let dropped = store.limit_put(&key, bounds, now);
        let _ = tokio::time::timeout(Duration::from_micros((i * 37) % 2000), dropped).await;
        let next = tokio::time::timeout(Duration::from_secs(10), store.limit_put(&key, bounds, now)).await;
        match next {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("write {i} after a dropped one failed: {e}"),
            Err(_) => panic!("write {i} after a dropped one did not finish in 10 s"),
        }
    }
}
