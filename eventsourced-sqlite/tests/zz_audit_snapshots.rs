//! Audit of the SQLite snapshot store (scratch; proofs move into the suite).
#![allow(missing_docs)]

use bytes::Bytes;
use eventsourced::{SeqNo, SnapshotStore, SnapshotStoreError};
use eventsourced_sqlite::SqliteEventLog;
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_sqlite_seq_no_edges() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventLog::open(dir.path().join("a.db"))
        .unwrap()
        .snapshot_store();
    for n in [0u64, 1, i64::MAX as u64] {
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
    for n in [i64::MAX as u64 + 1, u64::MAX] {
        let r = store
            .save("t", "big", SeqNo::new(n), Bytes::from("x"))
            .await;
        eprintln!("save {n}: {:?}", r.as_ref().map_err(|e| e.to_string()));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_sqlite_concurrent_saves_newest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventLog::open(dir.path().join("a.db"))
        .unwrap()
        .snapshot_store();
    let mut tasks = Vec::new();
    for n in (1..=300u64).rev() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .save("t", "a", SeqNo::new(n), Bytes::from(n.to_string()))
                .await
        }));
    }
    for task in tasks {
        timeout(LIMIT, task)
            .await
            .expect("no hang")
            .expect("no panic")
            .expect("save");
    }
    assert_eq!(
        store.load("t", "a").await.expect("load"),
        Some((SeqNo::new(300), Bytes::from("300")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_sqlite_ids_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteEventLog::open(dir.path().join("a.db"))
        .unwrap()
        .snapshot_store();
    let ids: Vec<String> = vec![
        "a".into(),
        "A".into(),
        "a ".into(),
        "a\0b".into(),
        "a\0c".into(),
        "a\0".into(),
        "e\u{301}".into(),
        "\u{e9}".into(),
        "%".into(),
        "_".into(),
        "x".repeat(100_000),
    ];
    for (n, id) in (1..).zip(&ids) {
        store
            .save("t", id, SeqNo::new(n), Bytes::from(id.clone()))
            .await
            .unwrap_or_else(|e| panic!("save {id:?}: {e}"));
    }
    for (n, id) in (1..).zip(&ids) {
        match store.load("t", id).await {
            Ok(loaded) => assert_eq!(
                loaded,
                Some((SeqNo::new(n), Bytes::from(id.clone()))),
                "id {:?}",
                &id[..id.len().min(20)]
            ),
            Err(e) => panic!("load {id:?}: {e}"),
        }
    }
    assert_eq!(store.load("T", "a").await.expect("load"), None);
    for (ty, id) in [("t", ""), ("", "a")] {
        let r = store.save(ty, id, SeqNo::new(1), Bytes::new()).await;
        assert!(
            matches!(r, Err(SnapshotStoreError::InvalidId { .. })),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_sqlite_foreign_rows_are_corrupt_errors() {
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
        eprintln!("{id}: {:?}", r.as_ref().map_err(|e| e.to_string()));
        assert!(
            matches!(r, Err(SnapshotStoreError::Corrupt { .. })),
            "{id}: {r:?}"
        );
        // a save over it still works (newer) and repairs it
        let r = store.save("t", id, SeqNo::new(10), Bytes::from("ok")).await;
        eprintln!(
            "save over {id}: {:?}",
            r.as_ref().map_err(|e| e.to_string())
        );
        if r.is_ok() {
            let after = store.load("t", id).await;
            assert!(
                matches!(&after, Ok(Some((seq_no, _))) if *seq_no == SeqNo::new(10)),
                "save over the damaged row of {id:?} returned Ok(()), but load still gives {:?}",
                after.map_err(|e| e.to_string())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_sqlite_too_large_state_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("a.db")).unwrap();
    let store = log.snapshot_store();
    let big = Bytes::from(vec![3u8; 1_000_000_001]);
    let r = timeout(LIMIT, store.save("t", "a", SeqNo::new(1), big))
        .await
        .expect("no hang");
    eprintln!("too large: {:?}", r.as_ref().map_err(|e| e.to_string()));
    assert!(r.is_err());
    store
        .save("t", "a", SeqNo::new(2), Bytes::from("small"))
        .await
        .expect("works afterwards");
    assert_eq!(
        store.load("t", "a").await.unwrap(),
        Some((SeqNo::new(2), Bytes::from("small")))
    );
}

/// A store with a classic escaping bug: separators are all mapped to `_`, so
/// "a.b", "a b" and "a/b" share one snapshot.
#[derive(Clone, Default)]
struct CollidingStore(eventsourced::MemorySnapshotStore);

fn escape(id: &str) -> String {
    id.replace(['.', ' ', '/', '*', '>'], "_")
}

impl SnapshotStore for CollidingStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        self.0.save(type_name, &escape(id), seq_no, state).await
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        self.0.load(type_name, &escape(id)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_suite_detects_colliding_ids() {
    // Prove the store really collides.
    let store = CollidingStore::default();
    store.save("t", "a.b", SeqNo::new(1), Bytes::from("a.b")).await.unwrap();
    store.save("t", "a b", SeqNo::new(2), Bytes::from("a b")).await.unwrap();
    assert_eq!(
        store.load("t", "a.b").await.unwrap(),
        Some((SeqNo::new(2), Bytes::from("a b"))),
        "precondition: the test store returns the snapshot of another id"
    );
    let suite = tokio::spawn(eventsourced::testkit::check_snapshot_store(CollidingStore::default()));
    let outcome = suite.await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "check_snapshot_store passed a store where load(\"a.b\") returns the snapshot of \"a b\""
    );
}

/// A store keyed by "<type>.<id>" without escaping: ("a", "b.c") and
/// ("a.b", "c") share one snapshot.
#[derive(Clone, Default)]
struct JoinedKeyStore(eventsourced::MemorySnapshotStore);

impl SnapshotStore for JoinedKeyStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        self.0.save("all", &format!("{type_name}.{id}"), seq_no, state).await
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        self.0.load("all", &format!("{type_name}.{id}")).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_suite_detects_type_and_id_joined_without_escaping() {
    let store = JoinedKeyStore::default();
    store.save("a", "b.c", SeqNo::new(1), Bytes::from("a/b.c")).await.unwrap();
    assert_eq!(
        store.load("a.b", "c").await.unwrap(),
        Some((SeqNo::new(1), Bytes::from("a/b.c"))),
        "precondition: the test store mixes up entities of different types"
    );
    let outcome = tokio::spawn(eventsourced::testkit::check_snapshot_store(JoinedKeyStore::default())).await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "check_snapshot_store passed a store where load(\"a.b\", \"c\") returns the snapshot of (\"a\", \"b.c\")"
    );
}

/// A store that checks "stored seq_no <= new" and writes in two steps (no
/// compare-and-swap): under concurrent saves an older one can win.
#[derive(Clone, Default)]
struct CheckThenWriteStore(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), (SeqNo, Bytes)>>>,
);

impl SnapshotStore for CheckThenWriteStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let key = (type_name.to_owned(), id.to_owned());
        let stored = self.0.lock().unwrap().get(&key).map(|(s, _)| *s);
        if stored.is_some_and(|s| s > seq_no) {
            return Ok(());
        }
        // The round trip between the check and the write.
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.0.lock().unwrap().insert(key, (seq_no, state));
        Ok(())
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(type_name.to_owned(), id.to_owned()))
            .cloned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zz_suite_detects_older_concurrent_save_winning() {
    // Precondition: the store loses the newer snapshot under concurrency.
    let store = CheckThenWriteStore::default();
    let (a, b) = (store.clone(), store.clone());
    let newer = tokio::spawn(async move { a.save("t", "x", SeqNo::new(20), Bytes::from("20")).await });
    tokio::time::sleep(Duration::from_micros(200)).await;
    let older = tokio::spawn(async move { b.save("t", "x", SeqNo::new(10), Bytes::from("10")).await });
    newer.await.unwrap().unwrap();
    older.await.unwrap().unwrap();
    assert_eq!(
        store.load("t", "x").await.unwrap().map(|(s, _)| s),
        Some(SeqNo::new(10)),
        "precondition: an older concurrent save replaced a newer one"
    );
    let outcome = tokio::spawn(eventsourced::testkit::check_snapshot_store(CheckThenWriteStore::default())).await;
    assert!(
        outcome.as_ref().is_err_and(|e| e.is_panic()),
        "check_snapshot_store passed a store where a concurrent older save replaces a newer snapshot"
    );
}
