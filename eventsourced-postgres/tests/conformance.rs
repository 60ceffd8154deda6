//! The core's conformance suites against the real server.

mod support;

use eventsourced::testkit;
use std::time::Duration;
use support::TestDb;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_log_passes_the_conformance_suite() {
    let db = TestDb::new();
    let log = db.log().await;
    timeout(
        Duration::from_secs(120),
        testkit::check_event_log(log.clone()),
    )
    .await
    .expect("the event log suite must finish in time");
    // A second run on the same (now non-empty) table.
    timeout(Duration::from_secs(120), testkit::check_event_log(log))
        .await
        .expect("the event log suite must finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_store_passes_the_conformance_suite() {
    let db = TestDb::new();
    let store = db.snapshots().await;
    timeout(
        Duration::from_secs(60),
        testkit::check_snapshot_store(store),
    )
    .await
    .expect("the snapshot store suite must finish in time");
}
