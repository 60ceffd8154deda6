//! The engine over the in-memory log and offset store: resume, rebuild,
//! batching, error strategies, lag, lease.

mod support;

use eventsourced::{EventLog, MemoryEventLog, Position, SerdeJson};
use eventsourced_projection::{
    AtLeastOnce, Delivery, ErrorAction, ErrorStrategy, Exhausted, Handler, HandlerError,
    InProcessLease, MemoryLag, MemoryOffsetStore, OffsetStore, Phase, ProjectedEvent, Projection,
    ProjectionState, RetryPolicy,
};
use std::time::Duration;
use support::{Recorder, WAIT, append, unique};

type MemProjection =
    Projection<MemoryEventLog, SerdeJson, AtLeastOnce<MemoryOffsetStore, Recorder>>;

fn projection(
    log: &MemoryEventLog,
    store: &MemoryOffsetStore,
    recorder: &Recorder,
    name: &str,
    strategy: ErrorStrategy,
) -> MemProjection {
    Projection::builder(
        name,
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(store.clone(), recorder.clone()),
    )
    .batch_size(3)
    .max_wait(Duration::from_millis(5))
    .error_strategy(strategy)
    .lease(InProcessLease::default())
    .lag_source(MemoryLag(log.clone()))
    .build()
    .expect("valid projection")
}

async fn wait(
    p: &MemProjection,
    what: &str,
    f: impl FnMut(&ProjectionState) -> bool,
) -> ProjectionState {
    match p.wait_for(f, WAIT).await {
        Some(s) => s,
        None => panic!("timed out waiting for {what}; state: {:?}", p.state().await),
    }
}

fn fast_retry(max_retries: u32, then: Exhausted) -> ErrorStrategy {
    ErrorStrategy::Retry(RetryPolicy {
        max_retries,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        then,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handles_every_event_once_and_resumes_from_the_stored_offset() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    append(&log, "counter", "b", &[10]).await;
    append(&log, "other", "x", &[100]).await; // another type: not projected

    let p = projection(&log, &store, &recorder, "totals", ErrorStrategy::Stop);
    assert_eq!(p.state().await.phase, Phase::Stopped);
    p.run().await;
    let s = wait(&p, "4 events", |s| s.handled == 4).await;
    assert_eq!(s.offset, Some(Position::new(4)));
    assert!(s.running);
    assert_eq!(s.delivery, Delivery::AtLeastOnce);

    // Live: events appended while running are handled.
    append(&log, "counter", "a", &[4]).await;
    wait(&p, "the live event", |s| s.handled == 5).await;
    p.stop().await;
    let s = p.state().await;
    assert_eq!((s.phase, s.running), (Phase::Stopped, false));

    // Appended while stopped: lag shows them; a new instance resumes after the offset.
    append(&log, "counter", "b", &[20, 30]).await;
    assert_eq!(p.state().await.lag, Some(2));
    let p2 = projection(&log, &store, &recorder, "totals", ErrorStrategy::Stop);
    p2.run().await;
    let s = wait(&p2, "resumed events", |s| s.handled == 2).await;
    assert_eq!(s.offset, Some(Position::new(8)));
    assert_eq!(p2.state().await.lag, Some(0));
    p2.stop().await;

    let seen = recorder.seen();
    assert_eq!(
        seen.positions(),
        vec![1, 2, 3, 4, 6, 7, 8],
        "each event once, in order"
    );
    assert_eq!(seen.totals()["a"], 10);
    assert_eq!(seen.totals()["b"], 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_resets_the_read_model_and_replays_from_zero() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    append(&log, "counter", "a", &[1, 2, 3, 4, 5]).await;
    let p = projection(&log, &store, &recorder, "rebuilt", ErrorStrategy::Stop);
    p.run().await;
    wait(&p, "5 events", |s| s.offset == Some(Position::new(5))).await;
    p.rebuild().await;
    wait(&p, "replay", |s| s.handled == 10).await;
    p.stop().await;
    assert_eq!(store.load("rebuilt").await.unwrap(), Some(Position::new(5)));
    let seen = recorder.seen();
    assert_eq!(seen.resets, 1);
    assert_eq!(
        seen.positions(),
        vec![1, 2, 3, 4, 5],
        "the reset cleared the first pass"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_strategy_stops_at_the_failing_event_after_committing_the_ones_before() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    append(&log, "counter", "a", &[1, 2, 3, 4, 5]).await;
    recorder.fail_at(2, 1);
    let p = projection(&log, &store, &recorder, "stops", ErrorStrategy::Stop);
    p.run().await;
    let s = wait(&p, "failure", |s| s.phase == Phase::Failed).await;
    assert!(!s.running);
    assert_eq!(s.offset, Some(Position::new(1)));
    let e = s.last_error.expect("last error");
    assert_eq!(e.position, Some(Position::new(2)));
    assert_eq!(e.id.as_deref(), Some("a"));
    assert_eq!(e.action, ErrorAction::Stopped);
    assert!(e.message.contains("planned failure at 2"), "{}", e.message);
    assert_eq!(s.error_strategy, ErrorStrategy::Stop);
    assert_eq!(store.load("stops").await.unwrap(), Some(Position::new(1)));

    // Run again once the cause is gone: continues at the failing event.
    p.run().await;
    wait(&p, "the rest", |s| s.offset == Some(Position::new(5))).await;
    p.stop().await;
    assert_eq!(recorder.seen().positions(), vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_strategy_skips_the_failing_event_and_goes_on() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    append(&log, "counter", "a", &[1, 2, 3, 4, 5]).await;
    recorder.fail_at(3, u32::MAX);
    let p = projection(&log, &store, &recorder, "skips", ErrorStrategy::Skip);
    p.run().await;
    let s = wait(&p, "all but one", |s| s.offset == Some(Position::new(5))).await;
    p.stop().await;
    assert_eq!((s.handled, s.skipped), (4, 1));
    let e = s.last_error.expect("last error");
    assert_eq!(
        (e.position, e.action),
        (Some(Position::new(3)), ErrorAction::Skipped)
    );
    assert_eq!(recorder.seen().positions(), vec![1, 2, 4, 5]);
    assert_eq!(recorder.seen().attempts[&Position::new(3)], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_strategy_retries_until_the_handler_succeeds() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    append(&log, "counter", "a", &[1, 2, 3, 4]).await;
    recorder.fail_at(2, 3);
    let p = projection(
        &log,
        &store,
        &recorder,
        "retries",
        fast_retry(3, Exhausted::Stop),
    );
    p.run().await;
    let s = wait(&p, "all events", |s| s.offset == Some(Position::new(4))).await;
    p.stop().await;
    assert_eq!((s.handled, s.skipped), (4, 0));
    let e = s.last_error.expect("last error");
    assert_eq!(
        (e.position, e.attempts, e.action),
        (Some(Position::new(2)), 3, ErrorAction::Retrying)
    );
    let seen = recorder.seen();
    assert_eq!(seen.positions(), vec![1, 2, 3, 4]);
    assert_eq!(seen.attempts[&Position::new(2)], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_strategy_stops_or_skips_when_the_retries_are_used_up() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;

    let recorder = Recorder::default();
    recorder.fail_at(2, u32::MAX);
    let store = MemoryOffsetStore::default();
    let p = projection(
        &log,
        &store,
        &recorder,
        "retry-stop",
        fast_retry(2, Exhausted::Stop),
    );
    p.run().await;
    let s = wait(&p, "failure", |s| s.phase == Phase::Failed).await;
    let e = s.last_error.expect("last error");
    assert_eq!(
        (e.position, e.attempts, e.action),
        (Some(Position::new(2)), 3, ErrorAction::Stopped)
    );
    assert_eq!(s.offset, Some(Position::new(1)));
    assert_eq!(recorder.seen().attempts[&Position::new(2)], 3);

    let recorder = Recorder::default();
    recorder.fail_at(2, u32::MAX);
    let p = projection(
        &log,
        &store,
        &recorder,
        "retry-skip",
        fast_retry(2, Exhausted::Skip),
    );
    p.run().await;
    let s = wait(&p, "skip", |s| s.offset == Some(Position::new(3))).await;
    p.stop().await;
    assert_eq!(s.skipped, 1);
    assert_eq!(recorder.seen().positions(), vec![1, 3]);
    assert_eq!(recorder.seen().attempts[&Position::new(2)], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn undecodable_events_follow_the_strategy() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1]).await;
    let last = log.last_seq_no("counter", "a").await.unwrap();
    log.append("counter", "a", last, &["not json".into()])
        .await
        .unwrap();
    append(&log, "counter", "a", &[3]).await;

    let store = MemoryOffsetStore::default();
    let recorder = Recorder::default();
    let p = projection(&log, &store, &recorder, "decode-stop", ErrorStrategy::Stop);
    p.run().await;
    let s = wait(&p, "failure", |s| s.phase == Phase::Failed).await;
    let e = s.last_error.expect("last error");
    assert_eq!(e.position, Some(Position::new(2)));
    assert!(e.message.contains("cannot decode"), "{}", e.message);
    assert_eq!(s.offset, Some(Position::new(1)));

    let recorder = Recorder::default();
    let p = projection(&log, &store, &recorder, "decode-skip", ErrorStrategy::Skip);
    p.run().await;
    let s = wait(&p, "skip", |s| s.offset == Some(Position::new(3))).await;
    p.stop().await;
    assert_eq!(s.skipped, 1);
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(recorder.seen().positions(), vec![1, 3]);
    let e = s.last_error.expect("last error");
    assert_eq!(e.position, Some(Position::new(2)));
    assert_eq!(e.action, ErrorAction::Skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_waits_for_the_lease_and_takes_over() {
    let log = MemoryEventLog::default();
    let store = MemoryOffsetStore::default();
    let lease = InProcessLease::default();
    let name = unique("leased");
    let make = |recorder: &Recorder| {
        Projection::builder(
            name.clone(),
            "counter",
            log.clone(),
            SerdeJson,
            AtLeastOnce::new(store.clone(), recorder.clone()),
        )
        .max_wait(Duration::ZERO)
        .lease(lease.clone())
        .build()
        .unwrap()
    };
    let (r1, r2) = (Recorder::default(), Recorder::default());
    let (p1, p2) = (make(&r1), make(&r2));
    append(&log, "counter", "a", &[1, 2]).await;
    p1.run().await;
    p1.wait_for(|s| s.offset == Some(Position::new(2)), WAIT)
        .await
        .expect("first runs");
    p2.run().await;
    p2.wait_for(|s| s.phase == Phase::WaitingForLease, WAIT)
        .await
        .expect("second waits");
    append(&log, "counter", "a", &[3]).await;
    p1.wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("first handles");
    assert_eq!(p2.state().await.phase, Phase::WaitingForLease);

    p1.stop().await;
    p2.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("second takes over");
    append(&log, "counter", "a", &[4]).await;
    p2.wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .expect("second handles");
    p2.stop().await;
    assert_eq!(r1.seen().positions(), vec![1, 2, 3]);
    assert_eq!(r2.seen().positions(), vec![4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_are_handled_in_groups_of_at_most_batch_size() {
    use eventsourced_projection::{Batch, BatchError, ProjectionError, ProjectionSink};

    /// Records the size of each batch.
    struct Sizes(
        std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
        Option<Position>,
    );
    impl ProjectionSink for Sizes {
        type Event = i64;
        fn delivery(&self) -> Delivery {
            Delivery::AtLeastOnce
        }
        async fn load_offset(&mut self, _: &str) -> Result<Option<Position>, ProjectionError> {
            Ok(self.1)
        }
        async fn handle_batch(&mut self, _: &str, b: Batch<i64>) -> Result<(), BatchError> {
            self.0.lock().unwrap().push(b.events().len());
            self.1 = Some(b.offset());
            Ok(())
        }
        async fn reset(&mut self, _: &str) -> Result<(), ProjectionError> {
            self.1 = None;
            Ok(())
        }
    }

    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1; 10]).await;
    let sizes = std::sync::Arc::default();
    let p = Projection::builder(
        "sizes",
        "counter",
        log.clone(),
        SerdeJson,
        Sizes(std::sync::Arc::clone(&sizes), None),
    )
    .batch_size(4)
    .max_wait(Duration::from_millis(20))
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.handled == 10, WAIT)
        .await
        .expect("all handled");
    p.stop().await;
    assert_eq!(*sizes.lock().unwrap(), vec![4, 4, 2]);
}

#[test]
fn invalid_configuration_is_refused() {
    let p = Projection::builder(
        "x",
        "counter",
        MemoryEventLog::default(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Recorder::default()),
    )
    .batch_size(0)
    .build();
    let e = p.unwrap_err().to_string();
    assert!(e.contains("batch-size"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_last_handle_stops_the_projection_and_frees_the_lease() {
    use eventsourced_projection::Lease;
    let log = MemoryEventLog::default();
    let lease = InProcessLease::default();
    let p = Projection::builder(
        "dropped",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Recorder::default()),
    )
    .lease(lease.clone())
    .build()
    .unwrap();
    p.run().await;
    let clone = p.clone();
    p.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("runs");
    drop(p);
    // One handle left: still running, the lease is held.
    let acquire = lease.acquire("dropped");
    tokio::pin!(acquire);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), acquire.as_mut())
            .await
            .is_err()
    );
    drop(clone);
    tokio::time::timeout(WAIT, acquire)
        .await
        .expect("the lease is freed once every handle is gone")
        .unwrap();
}

#[test]
fn public_types_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<MemProjection>();
    send_sync::<ProjectionState>();
    send_sync::<eventsourced_projection::ProjectionError>();
    send_sync::<eventsourced_projection::HandlerError>();
    send_sync::<MemoryOffsetStore>();
    send_sync::<InProcessLease>();
    send_sync::<MemoryLag>();
    send_sync::<ErrorStrategy>();
    send_sync::<eventsourced_projection::BatchError>();
    #[cfg(feature = "postgres")]
    {
        send_sync::<eventsourced_projection::postgres::PostgresOffsetStore>();
        send_sync::<eventsourced_projection::postgres::PostgresLease>();
        send_sync::<eventsourced_projection::postgres::PostgresExactlyOnce<()>>();
    }
    #[cfg(feature = "sqlite")]
    {
        send_sync::<eventsourced_projection::sqlite::SqliteOffsetStore>();
        send_sync::<eventsourced_projection::sqlite::SqliteLease>();
        send_sync::<eventsourced_projection::sqlite::SqliteExactlyOnce<()>>();
    }
}

/// A handler that takes half a second per event.
#[derive(Clone)]
struct Slow;

impl Handler for Slow {
    type Event = i64;
    async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }
}

/// `stop()` called on two handles at once: both return only once the task
/// ended, the batch in progress done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_every_handle_waits_for_the_task() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1]).await;
    let p = Projection::builder(
        "stop-twice",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Slow),
    )
    .max_wait(Duration::ZERO)
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("runs");
    tokio::time::sleep(Duration::from_millis(100)).await; // inside the slow batch
    let other = p.clone();
    let first = tokio::spawn(async move { p.stop().await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    other.stop().await;
    let s = other.state().await;
    first.await.unwrap();
    assert!(
        !s.running && s.phase == Phase::Stopped,
        "stop() returned while the task still runs: {s:?}"
    );
}

/// A `max_wait` longer than an `Instant` can reach means no deadline, not a
/// panic: with `batch_size` 1 every event is handled at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_wait_beyond_any_instant_is_no_deadline() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1]).await;
    let recorder = Recorder::default();
    let p = Projection::builder(
        "max-wait-max",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), recorder.clone()),
    )
    .max_wait(Duration::MAX)
    .batch_size(1)
    .lease(InProcessLease::default())
    .build()
    .expect("a valid configuration");
    p.run().await;
    let s = wait(&p, "the first event", |s| {
        s.offset.is_some() || s.phase == Phase::Failed
    })
    .await;
    p.stop().await;
    assert_eq!(s.phase, Phase::Running, "{s:?}");
    assert_eq!(recorder.seen().positions(), vec![1]);
}
