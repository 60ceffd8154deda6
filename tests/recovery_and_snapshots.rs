//! Recovery gives the same state with and without snapshots; snapshots are
//! taken when the seq_no crosses a multiple of N; a failed save is retried at
//! the next multiple.

mod support;

use bytes::Bytes;
use eventsourced::{
    EventSourcedExt, MemoryEventLog, MemorySnapshotStore, NoopSnapshotStore, SeqNo, SerdeJson,
    SnapshotStore, SnapshotStoreError,
};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use support::{Counter, Decrease, Get, Increase, IncreaseAll};

/// Waits until the store holds a snapshot at `seq_no` (saves run on their own task).
async fn snapshot_at<S: SnapshotStore>(store: &S, id: &str, seq_no: u64) -> Bytes {
    for _ in 0..500 {
        if let Some((s, bytes)) = store.load("counter", id).await.unwrap()
            && s == SeqNo::new(seq_no)
        {
            return bytes;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no snapshot at seq_no {seq_no} of {id}: {:?}",
        store.load("counter", id).await
    );
}

#[tokio::test]
async fn recovery_with_and_without_snapshots_is_identical() {
    let log = MemoryEventLog::default();
    let snapshots = MemorySnapshotStore::default();
    let counter = Counter::default()
        .entity()
        .snapshot_every(10)
        .spawn("r".to_owned(), log.clone(), snapshots.clone(), SerdeJson)
        .await
        .unwrap();
    for n in 1..=25u64 {
        counter.handle_command(Increase(n)).await.unwrap().unwrap();
        if n % 4 == 0 {
            counter.handle_command(Decrease(1)).await.unwrap().unwrap();
        }
    }
    let expected = counter.handle_command(Get).await.unwrap().unwrap();
    drop(counter);
    // 31 events: the seq_no crossed 10, 20 and 30.
    let snapshot = snapshot_at(&snapshots, "r", 30).await;
    let at_30: Counter = serde_json::from_slice(&snapshot).unwrap();
    assert!(
        at_30.0 < expected,
        "the snapshot holds the state at seq_no 30, before the last event"
    );

    let with = Counter::default()
        .entity()
        .spawn("r".to_owned(), log.clone(), snapshots.clone(), SerdeJson)
        .await
        .unwrap();
    let without = Counter::default()
        .entity()
        .spawn("r".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
        .await
        .unwrap();
    assert_eq!(with.handle_command(Get).await.unwrap(), Ok(expected));
    assert_eq!(without.handle_command(Get).await.unwrap(), Ok(expected));
}

#[tokio::test]
async fn snapshot_is_taken_when_a_batch_crosses_a_multiple() {
    let snapshots = MemorySnapshotStore::default();
    let counter = Counter::default()
        .entity()
        .snapshot_every(5)
        .spawn(
            "cross".to_owned(),
            MemoryEventLog::default(),
            snapshots.clone(),
            SerdeJson,
        )
        .await
        .unwrap();
    // Seq_nos 1..=3, then 4..=7: the second command crosses 5 without landing on it.
    counter
        .handle_command(IncreaseAll(vec![1, 1, 1]))
        .await
        .unwrap()
        .unwrap();
    counter
        .handle_command(IncreaseAll(vec![1, 1, 1, 1]))
        .await
        .unwrap()
        .unwrap();
    let bytes = snapshot_at(&snapshots, "cross", 7).await;
    assert_eq!(
        serde_json::from_slice::<Counter>(&bytes).unwrap(),
        Counter(7)
    );
}

/// Fails the first save, then delegates.
#[derive(Debug, Clone, Default)]
struct FlakySnapshotStore {
    inner: MemorySnapshotStore,
    attempts: Arc<Mutex<Vec<SeqNo>>>,
}

impl SnapshotStore for FlakySnapshotStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let first = {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(seq_no);
            attempts.len() == 1
        };
        if first {
            return Err(SnapshotStoreError::backend(
                "flaky",
                "save",
                std::io::Error::other("store unavailable"),
            ));
        }
        self.inner.save(type_name, id, seq_no, state).await
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        self.inner.load(type_name, id).await
    }
}

#[tokio::test]
async fn failed_snapshot_is_retried_at_the_next_multiple_and_commands_go_on() {
    let store = FlakySnapshotStore::default();
    let counter = Counter::default()
        .entity()
        .snapshot_every(3)
        .spawn(
            "flaky".to_owned(),
            MemoryEventLog::default(),
            store.clone(),
            SerdeJson,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        counter.handle_command(Increase(1)).await.unwrap().unwrap();
    }
    // Wait for the failed attempt at 3 before crossing 6, so the two saves don't coalesce.
    for _ in 0..500 {
        if !store.attempts.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        counter.handle_command(Increase(1)).await.unwrap().unwrap();
    }
    snapshot_at(&store.inner, "flaky", 6).await;
    assert_eq!(
        *store.attempts.lock().unwrap(),
        vec![SeqNo::new(3), SeqNo::new(6)]
    );
}
