//! The in-memory backends pass the shared conformance suites.

use eventsourced::{
    MemoryEventLog, MemorySnapshotStore, NoopSnapshotStore, SnapshotStore, testkit,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_event_log_conforms() {
    testkit::check_event_log(MemoryEventLog::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_snapshot_store_conforms() {
    testkit::check_snapshot_store(MemorySnapshotStore::default()).await;
}

#[tokio::test]
async fn noop_snapshot_store_keeps_nothing() {
    let store = NoopSnapshotStore;
    store
        .save("t", "a", eventsourced::SeqNo::new(1), "x".into())
        .await
        .unwrap();
    assert_eq!(store.load("t", "a").await.unwrap(), None);
}
