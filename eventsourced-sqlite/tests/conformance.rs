//! The shared conformance suites of `eventsourced::testkit`, against a file,
//! a reopened file, the fast durability mode and `:memory:`.

use eventsourced::testkit::{check_event_log, check_snapshot_store};
use eventsourced_sqlite::{Durability, SqliteConfig, SqliteEventLog, SqliteSnapshotStore};
use std::time::Duration;
use tokio::time::timeout;

const SUITE_TIMEOUT: Duration = Duration::from_secs(120);

async fn suites(log: SqliteEventLog) {
    timeout(SUITE_TIMEOUT, async {
        check_event_log(log.clone()).await;
        check_snapshot_store(log.snapshot_store()).await;
    })
    .await
    .expect("the conformance suites must finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_passes_the_suites_and_again_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conformance.db");
    suites(SqliteEventLog::open(&path).expect("open a new file")).await;
    // The handle above is dropped: the file is closed and opened again.
    let reopened = SqliteEventLog::open(&path).expect("reopen the file");
    suites(reopened).await;
    let store = SqliteSnapshotStore::open(&path).expect("open the snapshot store");
    timeout(SUITE_TIMEOUT, check_snapshot_store(store))
        .await
        .expect("in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fast_durability_passes_the_suites() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::default();
    config.durability = Durability::Fast;
    config.read_connections = 1;
    config.max_batch = 3;
    let log = SqliteEventLog::open_with(dir.path().join("fast.db"), config).expect("open");
    suites(log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_passes_the_suites() {
    suites(SqliteEventLog::open(":memory:").expect("open :memory:")).await;
}
