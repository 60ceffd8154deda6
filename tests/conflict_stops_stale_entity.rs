//! Two live instances of one entity: the stale one gets a conflict and stops;
//! the log never holds a duplicate seq_no.

mod support;

use eventsourced::{
    EventLog, EventSourcedExt, MemoryEventLog, NoopSnapshotStore, SeqNo, SerdeJson,
};
use futures::TryStreamExt;
use support::{Counter, Increase};

#[tokio::test]
async fn stale_instance_gets_a_conflict_and_writes_nothing() {
    let log = MemoryEventLog::default();
    let first = Counter::default()
        .entity()
        .spawn("twin".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
        .await
        .unwrap();
    let second = Counter::default()
        .entity()
        .spawn("twin".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
        .await
        .unwrap();

    assert_eq!(first.handle_command(Increase(1)).await.unwrap(), Ok(1));
    let error = second.handle_command(Increase(10)).await.unwrap_err();
    assert!(
        error.is_conflict(),
        "the stale instance must report a conflict, got {error}"
    );
    assert!(
        second
            .handle_command(Increase(1))
            .await
            .unwrap_err()
            .is_conflict(),
        "and keep reporting it"
    );
    assert_eq!(
        first.handle_command(Increase(1)).await.unwrap(),
        Ok(2),
        "the up-to-date instance keeps working"
    );

    let seq_nos: Vec<u64> = log
        .events_by_id("counter", "twin", SeqNo::new(1))
        .map_ok(|(s, _)| s.get())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        seq_nos,
        vec![1, 2],
        "no duplicate seq_no, nothing from the stale instance"
    );
}
