//! `NatsLag` against a real nats-server (the server comes from eventsourced-nats's test support): exact counts
//! after any offset, including inside a multi-event message, and a projection
//! over the NATS log reporting lag 0 once caught up.
#![cfg(feature = "nats")]

mod support;

use eventsourced::{EventLog, Position, SerdeJson};
use eventsourced_nats::{NatsConfig, NatsEventLog};
use eventsourced_projection::{
    AtLeastOnce, InProcessLease, LagSource, MemoryOffsetStore, Projection, nats::NatsLag,
};
use futures::StreamExt;
use std::time::Duration;
use support::{Recorder, WAIT, append, nats::nats_url, unique};

/// A log on a stream and subject prefix of its own.
async fn log() -> NatsEventLog {
    let name = unique("lag");
    let mut config = NatsConfig::from_url(&nats_url());
    config.stream = name.clone();
    config.subject_prefix = name;
    let log = NatsEventLog::new(config)
        .await
        .expect("connect to nats-server");
    log.setup().await.expect("create the stream");
    log
}

/// Appends, one message each: counter a [1,2], counter b [10], other x
/// [100,200], counter c [5,6,7], counter a [3], other y [1], counter b
/// [20,30]: 9 counter events in 5 messages, 3 other events in 2.
async fn fill(log: &NatsEventLog) {
    append(log, "counter", "a", &[1, 2]).await;
    append(log, "counter", "b", &[10]).await;
    append(log, "other", "x", &[100, 200]).await;
    append(log, "counter", "c", &[5, 6, 7]).await;
    append(log, "counter", "a", &[3]).await;
    append(log, "other", "y", &[1]).await;
    append(log, "counter", "b", &[20, 30]).await;
}

/// The positions of the first `n` events of `type_name`.
async fn positions(log: &NatsEventLog, type_name: &str, n: usize) -> Vec<Position> {
    let events = log.events_by_type(type_name, Position::START).take(n);
    tokio::time::timeout(WAIT, events.map(|e| e.expect("read").position).collect())
        .await
        .expect("the events are stored")
}

async fn lag(lag: &NatsLag, type_name: &str, offset: Option<Position>) -> u64 {
    lag.events_after(type_name, offset)
        .await
        .unwrap_or_else(|e| panic!("events_after({type_name}, {offset:?}): {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_the_events_after_any_offset_exactly() {
    let log = log().await;
    let source = NatsLag::for_log(&log);
    assert_eq!(lag(&source, "counter", None).await, 0, "empty stream");
    fill(&log).await;

    let counter = positions(&log, "counter", 9).await;
    // Messages are stream sequences 1..=7 and positions seq × 65536 + index.
    let expected: Vec<u64> = [
        (1, 0),
        (1, 1),
        (2, 0),
        (4, 0),
        (4, 1),
        (4, 2),
        (5, 0),
        (7, 0),
        (7, 1),
    ]
    .iter()
    .map(|(seq, i)| seq * 65_536 + i)
    .collect();
    assert_eq!(
        counter.iter().map(|p| p.get()).collect::<Vec<_>>(),
        expected
    );

    assert_eq!(lag(&source, "counter", None).await, 9);
    assert_eq!(lag(&source, "other", None).await, 3);
    assert_eq!(lag(&source, "nobody", None).await, 0);
    // After every event, inside multi-event messages too.
    for (k, offset) in counter.iter().enumerate() {
        assert_eq!(
            lag(&source, "counter", Some(*offset)).await,
            8 - k as u64,
            "after {offset}"
        );
    }
    // In the middle of c's message [5,6,7]: 7, then a [3], b [20,30].
    assert_eq!(
        lag(&source, "counter", Some(Position::new(4 * 65_536 + 1))).await,
        4
    );
    // The last position, and beyond the head.
    assert_eq!(lag(&source, "counter", Some(counter[8])).await, 0);
    assert_eq!(
        lag(&source, "counter", Some(Position::new(100 * 65_536))).await,
        0
    );
    // Offsets that are not counter positions: before everything, on another
    // type's message (other x at sequence 3).
    assert_eq!(lag(&source, "counter", Some(Position::new(0))).await, 9);
    assert_eq!(
        lag(&source, "counter", Some(Position::new(3 * 65_536 + 1))).await,
        6
    );
    let other = positions(&log, "other", 3).await;
    assert_eq!(lag(&source, "other", Some(other[0])).await, 2);
    assert_eq!(lag(&source, "other", Some(other[2])).await, 0);

    // Appends after a query are counted by the next one.
    append(&log, "counter", "c", &[8, 9, 10]).await;
    assert_eq!(lag(&source, "counter", Some(counter[8])).await, 3);
    assert_eq!(lag(&source, "counter", Some(counter[4])).await, 7);
    assert_eq!(lag(&source, "counter", None).await, 12);
    assert!(
        source.events_after("", None).await.is_err(),
        "empty type name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_over_nats_reports_its_lag() {
    let log = log().await;
    fill(&log).await;
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    let projection = || {
        Projection::builder(
            "nats-totals",
            "counter",
            log.clone(),
            SerdeJson,
            AtLeastOnce::new(store.clone(), recorder.clone()),
        )
        .batch_size(4)
        .max_wait(Duration::from_millis(5))
        .lease(InProcessLease::default())
        .lag_source(NatsLag::for_log(&log))
        .build()
        .expect("valid projection")
    };
    let p = projection();
    assert_eq!(p.state().await.lag, Some(9), "nothing handled yet");
    p.run().await;
    let Some(s) = p.wait_for(|s| s.handled == 9, WAIT).await else {
        panic!("9 events not handled; state: {:?}", p.state().await);
    };
    assert_eq!(s.offset, Some(Position::new(7 * 65_536 + 1)));
    assert_eq!(p.state().await.lag, Some(0), "caught up");
    p.stop().await;

    // Appended while stopped: the lag shows them, a new instance catches up.
    append(&log, "counter", "a", &[4, 5]).await;
    append(&log, "other", "x", &[300]).await;
    append(&log, "counter", "d", &[1]).await;
    assert_eq!(p.state().await.lag, Some(3));
    let p2 = projection();
    p2.run().await;
    if p2.wait_for(|s| s.handled == 3, WAIT).await.is_none() {
        panic!("3 events not handled; state: {:?}", p2.state().await);
    }
    assert_eq!(p2.state().await.lag, Some(0), "caught up again");
    p2.stop().await;
    let totals = recorder.seen().totals();
    assert_eq!(
        (totals["a"], totals["b"], totals["c"], totals["d"]),
        (15, 60, 18, 1)
    );
}
