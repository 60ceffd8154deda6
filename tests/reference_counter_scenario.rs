//! The reference counter scenario: 42 events and a snapshot at 21, then commands.

mod support;

use eventsourced::{
    EventLog, EventSourcedExt, MemoryEventLog, MemorySnapshotStore, SeqNo, SerdeJson, SnapshotStore,
};
use support::{Counter, CounterError, CounterEvent, Decrease, Get, Increase, encode};

#[tokio::test]
async fn counter_recovers_from_snapshot_and_events_then_handles_commands() {
    let log = MemoryEventLog::default();
    let snapshots = MemorySnapshotStore::default();
    let events: Vec<_> = (0..42)
        .map(|_| encode(&CounterEvent::Increased(1)))
        .collect();
    log.append("counter", "c1", SeqNo::ZERO, &events)
        .await
        .unwrap();
    snapshots
        .save(
            "counter",
            "c1",
            SeqNo::new(21),
            serde_json::to_vec(&Counter(21)).unwrap().into(),
        )
        .await
        .unwrap();

    let counter = Counter::default()
        .entity()
        .snapshot_every(1000)
        .spawn("c1".to_owned(), log.clone(), snapshots, SerdeJson)
        .await
        .unwrap();

    assert_eq!(counter.handle_command(Increase(1)).await.unwrap(), Ok(43));
    assert_eq!(
        counter.handle_command(Decrease(100)).await.unwrap(),
        Err(CounterError::Underflow)
    );
    assert_eq!(counter.handle_command(Decrease(1)).await.unwrap(), Ok(42));
    assert_eq!(counter.handle_command(Get).await.unwrap(), Ok(42));
    assert_eq!(
        log.last_seq_no("counter", "c1").await.unwrap(),
        SeqNo::new(44),
        "rejections and queries emit nothing"
    );
}
