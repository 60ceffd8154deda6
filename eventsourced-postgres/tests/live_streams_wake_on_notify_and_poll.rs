//! A live `events_by_type` of one process wakes on another process's commit
//! through LISTEN/NOTIFY, and falls back to polling when no notification
//! comes.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, Position, SeqNo};
use futures::StreamExt;
use std::time::Duration;
use support::TestDb;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_log_wakes_a_follower_through_notify() {
    let mut db = TestDb::new();
    let writer = db.log().await;
    // The follower's log polls only once a minute: the event must come by NOTIFY.
    db.config.poll_interval = Duration::from_secs(60);
    let reader = db.log().await;
    let mut follower = Box::pin(reader.events_by_type("notify", Position::START));
    // Let the first (empty) read and the LISTEN happen.
    assert!(
        timeout(Duration::from_millis(500), follower.next())
            .await
            .is_err(),
        "nothing to read yet"
    );
    for n in 1..=3 {
        writer
            .append(
                "notify",
                "a",
                SeqNo::new(n - 1),
                &[Bytes::from(format!("{n}"))],
            )
            .await
            .expect("append");
        let event = timeout(Duration::from_secs(20), follower.next())
            .await
            .expect("the NOTIFY of another log's commit must wake the follower (poll is 60s)")
            .expect("stream must not end")
            .expect("no error");
        assert_eq!(event.seq_no, SeqNo::new(n));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_notification_the_follower_polls() {
    let mut db = TestDb::new();
    db.config.poll_interval = Duration::from_millis(300);
    let log = db.log().await;
    let mut follower = Box::pin(log.events_by_type("silent", Position::START));
    assert!(
        timeout(Duration::from_millis(500), follower.next())
            .await
            .is_err(),
        "nothing to read yet"
    );
    // A writer that follows the position protocol but sends no NOTIFY.
    let mut raw = db.raw().await;
    let tx = raw.transaction().await.expect("BEGIN");
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&log.tables().lock_key()],
    )
    .await
    .expect("lock");
    tx.execute(
        &format!(
            "WITH p AS (UPDATE {} SET last = last + 1 RETURNING last)
             INSERT INTO {} (position, type_name, id, seq_no, event)
             SELECT p.last, 'silent', 'quiet', 1, '\\x2a'::bytea FROM p",
            log.tables().positions(),
            log.tables().events()
        ),
        &[],
    )
    .await
    .expect("insert");
    tx.commit().await.expect("COMMIT");
    let event = timeout(Duration::from_secs(20), follower.next())
        .await
        .expect("polling must find an event that no notification announced")
        .expect("stream must not end")
        .expect("no error");
    assert_eq!(
        (event.id.as_str(), event.event),
        ("quiet", Bytes::from_static(b"*"))
    );
}

/// A live stream and a snapshot store may be made outside a tokio runtime
/// (their tasks start when first used, inside one) and then work as usual.
#[test]
fn streams_and_stores_made_outside_a_runtime_work_inside_one() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = TestDb::new();
    let log = runtime.block_on(db.log());
    let mut live = Box::pin(log.events_by_type("outside", Position::START));
    let snapshots = eventsourced_postgres::PostgresSnapshotStore::from_log(&log);
    runtime.block_on(async {
        use eventsourced::SnapshotStore;
        snapshots.setup().await.expect("snapshot setup");
        snapshots
            .save("outside", "a", SeqNo::new(1), Bytes::from_static(b"s"))
            .await
            .expect("save");
        let loaded = snapshots.load("outside", "a").await.expect("load");
        assert_eq!(loaded, Some((SeqNo::new(1), Bytes::from_static(b"s"))));
        log.append("outside", "a", SeqNo::ZERO, &[Bytes::from_static(b"1")])
            .await
            .expect("append");
        let event = timeout(Duration::from_secs(20), live.next())
            .await
            .expect("the stream delivers")
            .expect("not ended")
            .expect("no error");
        assert_eq!((event.id.as_str(), event.seq_no), ("a", SeqNo::new(1)));
    });
}
