//! Spawning fails with a typed error naming entity and seq_no when the stored
//! data cannot make a valid state.

mod support;

use bytes::Bytes;
use eventsourced::{
    EntityOptions, EventEnvelope, EventLog, EventLogError, EventSourcedExt, MemoryEventLog,
    MemorySnapshotStore, NoopSnapshotStore, Position, SeqNo, SerdeJson, SnapshotStore, SpawnError,
};
use futures::{Stream, StreamExt, stream};
use support::{Counter, CounterEvent, encode};

#[tokio::test]
async fn undecodable_event_names_entity_and_seq_no() {
    let log = MemoryEventLog::default();
    log.append(
        "counter",
        "bad",
        SeqNo::ZERO,
        &[
            encode(&CounterEvent::Increased(1)),
            Bytes::from_static(b"\xffnot json"),
        ],
    )
    .await
    .unwrap();
    let error = Counter::default()
        .entity()
        .spawn("bad".to_owned(), log, NoopSnapshotStore, SerdeJson)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SpawnError::DecodeEvent { seq_no, .. } if *seq_no == SeqNo::new(2)),
        "got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("counter/bad") && message.contains("event 2"),
        "the message must name entity and seq_no: {message}"
    );
}

#[tokio::test]
async fn undecodable_snapshot_is_typed() {
    let snapshots = MemorySnapshotStore::default();
    snapshots
        .save("counter", "s", SeqNo::ZERO, Bytes::from_static(b"["))
        .await
        .unwrap();
    let error = Counter::default()
        .entity()
        .spawn(
            "s".to_owned(),
            MemoryEventLog::default(),
            snapshots,
            SerdeJson,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, SpawnError::DecodeSnapshot { .. }),
        "got {error:?}"
    );
}

#[tokio::test]
async fn snapshot_newer_than_the_log_is_refused() {
    let snapshots = MemorySnapshotStore::default();
    snapshots
        .save(
            "counter",
            "ahead",
            SeqNo::new(5),
            serde_json::to_vec(&Counter(5)).unwrap().into(),
        )
        .await
        .unwrap();
    let error = Counter::default()
        .entity()
        .spawn(
            "ahead".to_owned(),
            MemoryEventLog::default(),
            snapshots,
            SerdeJson,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, SpawnError::SnapshotAheadOfLog { snapshot_seq_no, log_seq_no, .. } if snapshot_seq_no == SeqNo::new(5) && log_seq_no == SeqNo::ZERO),
        "got {error:?}"
    );
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let cases = [
        (
            EntityOptions {
                max_batch: 0,
                ..EntityOptions::default()
            },
            "max_batch",
        ),
        (
            EntityOptions {
                mailbox_size: 0,
                ..EntityOptions::default()
            },
            "mailbox_size",
        ),
        // Beyond what tokio's bounded channel can hold: refused, not a panic.
        (
            EntityOptions {
                mailbox_size: usize::MAX,
                ..EntityOptions::default()
            },
            "mailbox_size",
        ),
    ];
    for (options, field) in cases {
        let error = Counter::default()
            .entity()
            .options(options)
            .spawn(
                "o".to_owned(),
                MemoryEventLog::default(),
                NoopSnapshotStore,
                SerdeJson,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, SpawnError::InvalidOptions(_)) && error.to_string().contains(field),
            "got {error:?}"
        );
    }
}

/// A log that loses event 2 of every entity on read.
#[derive(Debug, Clone, Default)]
struct LossyLog(MemoryEventLog);

impl EventLog for LossyLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.0.append(type_name, id, expected_last, events).await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.0
            .events_by_id(type_name, id, from)
            .filter(|e| std::future::ready(!matches!(e, Ok((s, _)) if s.get() == 2)))
    }
    fn events_by_type(
        &self,
        _type_name: &str,
        _from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        stream::empty()
    }
}

#[tokio::test]
async fn gap_in_seq_nos_is_refused() {
    let log = LossyLog::default();
    let events: Vec<_> = (0..3)
        .map(|_| encode(&CounterEvent::Increased(1)))
        .collect();
    log.append("counter", "gap", SeqNo::ZERO, &events)
        .await
        .unwrap();
    let error = Counter::default()
        .entity()
        .spawn("gap".to_owned(), log, NoopSnapshotStore, SerdeJson)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SpawnError::Gap { expected, found: Some(found), .. } if expected == SeqNo::new(2) && found == SeqNo::new(3)),
        "got {error:?}"
    );
}
