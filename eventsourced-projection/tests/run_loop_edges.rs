//! The run loop at its edges: stop while a batch fills or after a stop that
//! was given up on, attempts of a failing event in a transactional batch, the
//! state of a standby instance, panics, stream errors, rebuild and backoff.

mod support;

use eventsourced::{
    EventEnvelope, EventLog, EventLogError, MemoryEventLog, Position, SeqNo, SerdeJson,
};
use eventsourced_projection::{
    AtLeastOnce, ErrorAction, ErrorStrategy, Exhausted, Handler, HandlerError, InProcessLease,
    Lease, MemoryLag, MemoryOffsetStore, OffsetStore, Phase, ProjectedEvent, Projection,
    RetryPolicy,
    sqlite::{SqliteHandler, SqliteOffsetStore, rusqlite::Transaction},
};
use futures::{Stream, StreamExt};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};
use support::{Recorder, WAIT, append};

const PROMPT: Duration = Duration::from_secs(2);

// -----------------------------------------------------------------------
// Was a defect: stop() hangs while a batch waits to fill (idle stream after one
// event), because the batch-filling loop never looks at the stop signal.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_while_a_batch_waits_to_fill() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1]).await;
    let p = Projection::builder(
        "audit-fill",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Recorder::default()),
    )
    .batch_size(10)
    .max_wait(Duration::from_secs(3600))
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("runs");
    tokio::time::sleep(Duration::from_millis(200)).await; // the first event is in, the stream idles
    let stopped = tokio::time::timeout(PROMPT, p.stop()).await;
    assert!(
        stopped.is_ok(),
        "stop() did not return within {PROMPT:?} while the batch waited to fill; state: {:?}",
        p.state().await
    );
}

/// A handler that takes 500 ms per event.
#[derive(Clone, Default)]
struct Slow(Arc<AtomicU32>);

impl Handler for Slow {
    type Event = i64;
    async fn handle(&mut self, _: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

// -----------------------------------------------------------------------
// Was a defect: a stop() whose caller gave up waiting (timeout) leaves the task
// "told to stop"; a later run() sees `running == true` and returns without
// doing anything, so the projection then stops although run() was the last
// call.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_after_a_given_up_stop_runs_again() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3, 4, 5, 6]).await;
    let slow = Slow::default();
    let p = Projection::builder(
        "audit-cancelled-stop",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), slow.clone()),
    )
    .batch_size(1)
    .max_wait(Duration::ZERO)
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("runs");
    tokio::time::sleep(Duration::from_millis(100)).await; // inside a slow event
    // The caller gives up on stop() (e.g. a shutdown timeout)...
    assert!(
        tokio::time::timeout(Duration::from_millis(50), p.stop())
            .await
            .is_err()
    );
    // ...and changes its mind: run() again.
    p.run().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = p.state().await;
    p.stop().await;
    assert!(
        s.running && s.phase == Phase::Running,
        "run() after a cancelled stop() is ignored and the projection stops: {s:?}"
    );
}

// -----------------------------------------------------------------------
// Was a defect: with a transactional sink (committed_before = false) a failing
// event that is not first in its batch is tried once more than the strategy
// says and than LastError::attempts reports (the first, batched failure is
// not counted).
// ---------------------------------------------------------------------------
#[derive(Clone, Default)]
struct FailsAt3(Arc<Mutex<HashMap<u64, u32>>>);

impl SqliteHandler for FailsAt3 {
    type Event = i64;
    fn handle(&mut self, _: &Transaction<'_>, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
        *self.0.lock().unwrap().entry(e.position.get()).or_default() += 1;
        if e.position.get() == 3 {
            return Err(HandlerError::msg("always fails at 3"));
        }
        Ok(())
    }
}

async fn transactional_attempts(strategy: ErrorStrategy) -> (u32, u32) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteOffsetStore::open(dir.path().join("read.db"))
        .await
        .unwrap();
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3, 4]).await;
    let handler = FailsAt3::default();
    let p = Projection::builder(
        "audit-tx-attempts",
        "counter",
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(handler.clone()),
    )
    .batch_size(10)
    .error_strategy(strategy)
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Failed, WAIT)
        .await
        .expect("stops by its strategy");
    p.stop().await;
    assert_eq!(s.offset, Some(Position::new(2)));
    let calls = handler.0.lock().unwrap()[&3];
    (calls, s.last_error.unwrap().attempts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_stop_strategy_tries_the_failing_event_once() {
    let (calls, attempts) = transactional_attempts(ErrorStrategy::Stop).await;
    assert_eq!(
        (calls, attempts),
        (1, 1),
        "ErrorStrategy::Stop: handler calls on the failing event vs LastError::attempts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_retry_makes_max_retries_plus_one_attempts() {
    let (calls, attempts) = transactional_attempts(ErrorStrategy::Retry(RetryPolicy {
        max_retries: 2,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        then: Exhausted::Stop,
    }))
    .await;
    assert_eq!(
        (calls, attempts),
        (3, 3),
        "max_retries 2 = 3 attempts: handler calls on the failing event vs LastError::attempts"
    );
}

// -----------------------------------------------------------------------
// Was a defect: a standby instance (waiting for the lease) reported offset
// None and a lag of every event, although the offset store held the offset.
// It now reads the stored offset while it waits, and again now and then.
// ---------------------------------------------------------------------------
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_instance_shows_the_stored_offset_and_lag() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    let store = MemoryOffsetStore::default();
    let lease = InProcessLease::default();
    let build = |recorder: Recorder| {
        Projection::builder(
            "audit-standby",
            "counter",
            log.clone(),
            SerdeJson,
            AtLeastOnce::new(store.clone(), recorder),
        )
        .max_wait(Duration::from_millis(5))
        .lease(lease.clone())
        .lag_source(MemoryLag(log.clone()))
        .build()
        .unwrap()
    };
    let active = build(Recorder::default());
    active.run().await;
    active
        .wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("caught up");
    let standby = build(Recorder::default());
    standby.run().await;
    standby
        .wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("the standby reads the stored offset");
    let s = standby.state().await;
    // It follows the offset the active instance commits.
    append(&log, "counter", "a", &[4]).await;
    let later = standby
        .wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .expect("the standby reads the offset again");
    assert_eq!(later.phase, Phase::WaitingForLease);
    active.stop().await;
    standby.stop().await;
    assert_eq!(s.phase, Phase::WaitingForLease);
    assert_eq!(
        (s.offset, s.lag),
        (Some(Position::new(3)), Some(0)),
        "standby state while the stored offset is 3 and nothing is behind"
    );
}

// ---------------------------------------------------------------------------
// Behaviour checked with the fixes above.
// ---------------------------------------------------------------------------

/// A handler that panics on position 2.
#[derive(Clone, Default)]
struct Panics(Arc<AtomicU32>);

impl Handler for Panics {
    type Event = i64;
    async fn handle(&mut self, e: &ProjectedEvent<i64>) -> Result<(), HandlerError> {
        if e.position.get() == 2 && self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("user handler bug");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_fails_frees_the_lease_and_can_run_again() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    let lease = InProcessLease::default();
    let p = Projection::builder(
        "audit-panic",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), Panics::default()),
    )
    .batch_size(1)
    .max_wait(Duration::ZERO)
    .lease(lease.clone())
    .build()
    .unwrap();
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Failed, WAIT)
        .await
        .expect("fails");
    assert!(!s.running);
    assert_eq!(s.offset, Some(Position::new(1)));
    assert!(s.last_error.unwrap().message.contains("panicked"));
    let g = tokio::time::timeout(PROMPT, lease.acquire("audit-panic"))
        .await
        .expect("lease free");
    drop(g);
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("runs again");
    tokio::time::timeout(PROMPT, p.stop()).await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_is_prompt_during_a_long_retry_backoff_and_while_idle_and_twice() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2]).await;
    let recorder = Recorder::default();
    recorder.fail_at(2, 100);
    let lease = InProcessLease::default();
    let p = Projection::builder(
        "audit-backoff",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), recorder.clone()),
    )
    .error_strategy(ErrorStrategy::Retry(RetryPolicy {
        max_retries: 10,
        min_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        then: Exhausted::Stop,
    }))
    .max_wait(Duration::from_millis(5))
    .lease(lease.clone())
    .build()
    .unwrap();
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Retrying, WAIT)
        .await
        .expect("retrying");
    assert_eq!(s.offset, Some(Position::new(1)));
    assert_eq!(s.last_error.as_ref().unwrap().action, ErrorAction::Retrying);
    tokio::time::timeout(PROMPT, p.stop())
        .await
        .expect("stop during backoff");
    tokio::time::timeout(PROMPT, p.stop())
        .await
        .expect("second stop");
    let s = p.state().await;
    assert_eq!((s.phase, s.running), (Phase::Stopped, false));
    drop(
        tokio::time::timeout(PROMPT, lease.acquire("audit-backoff"))
            .await
            .expect("lease free"),
    );

    // Idle stream: stop is prompt.
    recorder.seen().fail.clear();
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(2)), WAIT)
        .await
        .expect("resumes");
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(PROMPT, p.stop())
        .await
        .expect("stop while idle");
    assert_eq!(recorder.seen().positions(), vec![1, 2]);
}

/// A log whose `events_by_type` streams fail after `after` events, the first
/// `failures` times they are opened.
#[derive(Clone)]
struct Flaky {
    inner: MemoryEventLog,
    failures: Arc<AtomicU32>,
    after: usize,
}

impl EventLog for Flaky {
    async fn append(
        &self,
        t: &str,
        id: &str,
        e: SeqNo,
        ev: &[bytes::Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.inner.append(t, id, e, ev).await
    }
    async fn last_seq_no(&self, t: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.inner.last_seq_no(t, id).await
    }
    fn events_by_id(
        &self,
        t: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, bytes::Bytes), EventLogError>> + Send + 'static + use<>
    {
        self.inner.events_by_id(t, id, from)
    }
    fn events_by_type(
        &self,
        t: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let stream = self.inner.events_by_type(t, from);
        if fail {
            stream
                .take(self.after)
                .chain(futures::stream::once(async {
                    Err(EventLogError::backend(
                        "flaky",
                        "follow",
                        "connection reset",
                    ))
                }))
                .boxed()
        } else {
            stream.boxed()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_event_stream_restarts_and_resumes_exactly_once_in_order() {
    let inner = MemoryEventLog::default();
    append(&inner, "counter", "a", &[1, 2, 3, 4, 5, 6, 7]).await;
    let log = Flaky {
        inner: inner.clone(),
        failures: Arc::new(AtomicU32::new(3)),
        after: 2,
    };
    let recorder = Recorder::default();
    let p = Projection::builder(
        "audit-flaky",
        "counter",
        log,
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), recorder.clone()),
    )
    .batch_size(10)
    .max_wait(Duration::from_millis(5))
    .restart_backoff(Duration::from_millis(5), Duration::from_millis(20))
    .lease(InProcessLease::default())
    .lag_source(MemoryLag(inner.clone()))
    .build()
    .unwrap();
    p.run().await;
    let s = p
        .wait_for(|s| s.offset == Some(Position::new(7)), WAIT)
        .await
        .expect("catches up");
    p.stop().await;
    assert_eq!(recorder.seen().positions(), vec![1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(s.last_error.unwrap().action, ErrorAction::Restarting);
    assert_eq!(p.state().await.lag, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_while_running_replays_once_in_order_and_state_is_reset() {
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    let recorder = Recorder::default();
    let store = MemoryOffsetStore::default();
    let p = Projection::builder(
        "audit-rebuild",
        "counter",
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(store.clone(), recorder.clone()),
    )
    .max_wait(Duration::from_millis(5))
    .lease(InProcessLease::default())
    .lag_source(MemoryLag(log.clone()))
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .unwrap();
    p.rebuild().await;
    p.run().await; // no-op while running
    p.wait_for(|s| s.handled == 6, WAIT).await.unwrap();
    append(&log, "counter", "a", &[4]).await;
    p.wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .unwrap();
    p.stop().await;
    assert_eq!(recorder.seen().positions(), vec![1, 2, 3, 4]);
    assert_eq!(recorder.seen().resets, 1);
    assert_eq!(
        store.load("audit-rebuild").await.unwrap(),
        Some(Position::new(4))
    );
}
