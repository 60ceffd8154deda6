//! The SQLite snapshot store at its edges: seq_nos it can and cannot store,
//! and rows damaged by another tool, which load as `Corrupt` and which the
//! next save replaces. (What every store must do is in the shared suite,
//! `eventsourced::testkit::check_snapshot_store`, run by `conformance.rs`.)

use bytes::Bytes;
use eventsourced::{SeqNo, SnapshotStore, SnapshotStoreError};
use eventsourced_sqlite::SqliteEventLog;
use std::time::Duration;

/// seq_no 0, 1 and i64::MAX are stored; above i64::MAX a save is refused,
/// naming the seq_no, and the stored snapshot stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seq_nos_at_the_edges_are_stored_or_refused_keeping_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventLog::open(dir.path().join("a.db"))
        .unwrap()
        .snapshot_store();
    for n in [0u64, 1, i64::MAX.unsigned_abs()] {
        let id = format!("id-{n}");
        store
            .save("t", &id, SeqNo::new(n), Bytes::from("s"))
            .await
            .expect("save");
        assert_eq!(
            store.load("t", &id).await.expect("load"),
            Some((SeqNo::new(n), Bytes::from("s")))
        );
    }
    store
        .save("t", "big", SeqNo::new(5), Bytes::from("five"))
        .await
        .expect("save");
    for n in [i64::MAX.unsigned_abs() + 1, u64::MAX] {
        let r = store
            .save("t", "big", SeqNo::new(n), Bytes::from("x"))
            .await;
        let e = r.expect_err("not storable");
        assert!(e.to_string().contains(&n.to_string()), "{e}");
    }
    assert_eq!(
        store.load("t", "big").await.expect("load"),
        Some((SeqNo::new(5), Bytes::from("five")))
    );
    store
        .save("t", "empty", SeqNo::new(3), Bytes::new())
        .await
        .expect("save");
    assert_eq!(
        store.load("t", "empty").await.expect("load"),
        Some((SeqNo::new(3), Bytes::new()))
    );
}

/// Rows that another tool wrote (a negative, real or text seq_no, a state
/// that is not a blob) load as `Corrupt`; a save over one replaces it rather
/// than report success and keep it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_load_as_corrupt_and_a_save_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let store = SqliteEventLog::open(&path).unwrap().snapshot_store();
    store
        .save("t", "seed", SeqNo::new(1), Bytes::from("x"))
        .await
        .expect("save");
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.busy_timeout(Duration::from_secs(10)).unwrap();
    raw.execute_batch(
        "INSERT INTO snapshots VALUES ('t', 'neg', -1, x'00');
         INSERT INTO snapshots VALUES ('t', 'real', 1.5, x'00');
         INSERT INTO snapshots VALUES ('t', 'text', 'abc', x'00');
         INSERT INTO snapshots VALUES ('t', 'textstate', 3, 'hello');
         INSERT INTO snapshots VALUES ('t', 'intstate', 3, 42);",
    )
    .unwrap();
    drop(raw);
    for id in ["neg", "real", "text", "textstate", "intstate"] {
        let r = store.load("t", id).await;
        assert!(
            matches!(r, Err(SnapshotStoreError::Corrupt { .. })),
            "{id}: {r:?}"
        );
        // A save over it replaces it.
        store
            .save("t", id, SeqNo::new(10), Bytes::from("ok"))
            .await
            .unwrap_or_else(|e| panic!("save over the damaged row of {id:?}: {e}"));
        let after = store.load("t", id).await;
        assert!(
            matches!(&after, Ok(Some((seq_no, _))) if *seq_no == SeqNo::new(10)),
            "a save over the damaged row of {id:?} returned Ok(()), but load gives {:?}",
            after.map_err(|e| e.to_string())
        );
    }
}
