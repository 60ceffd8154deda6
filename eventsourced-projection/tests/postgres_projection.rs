//! PostgreSQL offsets: exactly-once batches, rollback on handler failure,
//! fencing, rebuild, and the advisory-lock lease (needs DATABASE_URL).
#![cfg(feature = "postgres")]

mod support;

use eventsourced::{MemoryEventLog, Position, SerdeJson};
use eventsourced_projection::{
    Batch, BatchError, Delivery, ErrorStrategy, InProcessLease, OffsetStore, Phase, ProjectedEvent,
    Projection, ProjectionError, ProjectionSink,
    postgres::{PostgresExactlyOnce, PostgresLease, PostgresOffsetStore},
};
use std::{sync::Arc, time::Duration};
use support::{WAIT, append, pg, unique};

type PgProjection = Projection<MemoryEventLog, SerdeJson, PostgresExactlyOnce<pg::PgTotals>>;

async fn store(pool: &deadpool_postgres::Pool, schema: &str) -> PostgresOffsetStore {
    let store = PostgresOffsetStore::new(pool.clone(), schema).expect("valid schema");
    store.setup().await.expect("setup");
    store.setup().await.expect("setup is idempotent");
    store
}

fn projection(
    log: &MemoryEventLog,
    store: &PostgresOffsetStore,
    handler: &pg::PgTotals,
    name: &str,
    strategy: ErrorStrategy,
) -> PgProjection {
    Projection::builder(
        name,
        "counter",
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(handler.clone()),
    )
    .batch_size(4)
    .max_wait(Duration::from_millis(5))
    .error_strategy(strategy)
    .lease(InProcessLease::default())
    .build()
    .expect("valid projection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_model_and_offset_commit_together_and_failures_roll_back() {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "proj_once").await;
    let store = store(&pool, &schema).await;
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    append(&log, "counter", "b", &[10, 20]).await;
    let handler = pg::PgTotals::new(&schema);
    // Position 3 fails once after writing: the batch [1..4] rolls back, [1, 2]
    // commit alone, and `Stop` applies to that one attempt at 3.
    handler.fail.lock().unwrap().insert(Position::new(3), 1);

    let p = projection(&log, &store, &handler, "once", ErrorStrategy::Stop);
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Failed, WAIT)
        .await
        .expect("stops");
    assert_eq!(s.delivery, Delivery::ExactlyOnce);
    assert_eq!(s.offset, Some(Position::new(2)));
    assert_eq!(store.load("once").await.unwrap(), Some(Position::new(2)));
    assert_eq!(
        pg::totals(&pool, &schema).await["a"],
        (3, 2, 2),
        "only events 1 and 2, once"
    );

    // The cause is gone: run again; every event exactly once.
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(5)), WAIT)
        .await
        .expect("catches up");
    append(&log, "counter", "a", &[4]).await;
    p.wait_for(|s| s.offset == Some(Position::new(6)), WAIT)
        .await
        .expect("live");
    p.stop().await;
    let totals = pg::totals(&pool, &schema).await;
    assert_eq!(totals["a"], (10, 4, 4));
    assert_eq!(totals["b"], (30, 2, 2));
    assert_eq!(pg::gaps(&pool, &schema).await, 0);

    // Resume with a new instance: nothing handled twice.
    append(&log, "counter", "b", &[5]).await;
    let p2 = projection(&log, &store, &handler, "once", ErrorStrategy::Stop);
    p2.run().await;
    p2.wait_for(|s| s.offset == Some(Position::new(7)), WAIT)
        .await
        .expect("resumes");
    assert_eq!(p2.state().await.handled, 1);
    p2.stop().await;
    assert_eq!(pg::totals(&pool, &schema).await["b"], (35, 3, 3));

    // Rebuild: read model and offset reset together, then replayed.
    p2.rebuild().await;
    p2.wait_for(|s| s.handled == 8, WAIT)
        .await
        .expect("rebuilt");
    p2.stop().await;
    let totals = pg::totals(&pool, &schema).await;
    assert_eq!((totals["a"], totals["b"]), ((10, 4, 4), (35, 3, 3)));
    assert_eq!(pg::gaps(&pool, &schema).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skip_and_retry_commit_exactly_once() {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "proj_strat").await;
    let store = store(&pool, &schema).await;
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3, 4]).await;

    let handler = pg::PgTotals::new(&schema);
    handler
        .fail
        .lock()
        .unwrap()
        .insert(Position::new(2), u32::MAX);
    let p = projection(&log, &store, &handler, "skip", ErrorStrategy::Skip);
    p.run().await;
    let s = p
        .wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .expect("skips");
    p.stop().await;
    assert_eq!(s.skipped, 1);
    // Event 2 skipped: the handler's write for it was rolled back; event 3
    // shows up as a gap in the seq_nos, which is what skipping means.
    let totals = pg::totals(&pool, &schema).await;
    assert_eq!(totals["a"], (8, 3, 4));

    let handler = pg::PgTotals::new(&schema);
    handler.fail.lock().unwrap().insert(Position::new(5), 2);
    append(&log, "counter", "b", &[7]).await;
    let retry = ErrorStrategy::Retry(eventsourced_projection::RetryPolicy {
        max_retries: 3,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        then: eventsourced_projection::Exhausted::Stop,
    });
    let p = projection(&log, &store, &handler, "skip", retry);
    p.run().await;
    let s = p
        .wait_for(|s| s.offset == Some(Position::new(5)), WAIT)
        .await
        .expect("retries");
    p.stop().await;
    assert_eq!(s.last_error.map(|e| e.attempts), Some(2));
    assert_eq!(
        pg::totals(&pool, &schema).await["b"],
        (7, 1, 1),
        "retried writes rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_that_lost_the_offset_race_commits_nothing() {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "proj_fence").await;
    let store = store(&pool, &schema).await;
    let event = |p: u64| ProjectedEvent {
        position: Position::new(p),
        id: "a".to_owned(),
        seq_no: eventsourced::SeqNo::new(p),
        event: 1i64,
    };
    let mut first = store.clone().exactly_once(pg::PgTotals::new(&schema));
    let mut second = store.clone().exactly_once(pg::PgTotals::new(&schema));
    assert_eq!(first.load_offset("fenced").await.unwrap(), None);
    assert_eq!(second.load_offset("fenced").await.unwrap(), None);
    let batch = |p: u64| Batch::new(Arc::from(vec![event(p)]), 0..1, Position::new(p));
    first
        .handle_batch("fenced", batch(1))
        .await
        .expect("first commits");
    let err = second.handle_batch("fenced", batch(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            BatchError::Store(ProjectionError::OffsetConflict {
                expected: None,
                actual: Some(_),
                ..
            })
        ),
        "{err:?}"
    );
    first
        .handle_batch("fenced", batch(2))
        .await
        .expect("first goes on");
    assert_eq!(pg::totals(&pool, &schema).await["a"], (2, 2, 2));
    assert_eq!(pg::gaps(&pool, &schema).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_instance_takes_over_when_the_lease_holder_dies() {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "proj_lease").await;
    let store = store(&pool, &schema).await;
    let log = MemoryEventLog::default();
    let name = unique("lease");
    let lease = |app: &str| {
        let mut config: tokio_postgres::Config = support::database_url().parse().unwrap();
        config.application_name(app);
        PostgresLease::new(config)
            .retry_interval(Duration::from_millis(50))
            .check_interval(Duration::from_millis(100))
    };
    // The first waits long before it reopens after an error, so the second
    // (retrying the lock every 50 ms) gets the lease first.
    let make = |app: &str, restart: Duration| {
        Projection::builder(
            name.clone(),
            "counter",
            log.clone(),
            SerdeJson,
            store.clone().exactly_once(pg::PgTotals::new(&schema)),
        )
        .max_wait(Duration::ZERO)
        .lease(lease(app))
        .restart_backoff(restart, restart)
        .build()
        .unwrap()
    };
    let first_app = unique("first");
    let p1 = make(&first_app, Duration::from_secs(2));
    let p2 = make(&unique("second"), Duration::from_millis(10));
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
    // The standby shows the offset the holder stores, read now and then.
    let standby = p2
        .wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("the standby shows the stored offset");
    assert_eq!(standby.phase, Phase::WaitingForLease);

    // The holder's lease connection dies: the server frees the lock, the
    // holder stops handling, the second takes over.
    let client = pool.get().await.unwrap();
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&first_app],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    p2.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("second takes over");
    let s1 = p1
        .wait_for(|s| s.phase != Phase::Running, WAIT)
        .await
        .expect("first notices");
    assert!(
        s1.last_error
            .as_ref()
            .is_some_and(|e| e.message.contains("lease")),
        "{s1:?}"
    );
    append(&log, "counter", "a", &[4]).await;
    p2.wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .expect("second handles");
    // The first waits for the lease again instead of handling.
    p1.wait_for(|s| s.phase == Phase::WaitingForLease, WAIT)
        .await
        .expect("first waits");
    p2.stop().await;
    p1.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("first takes over again");
    p1.stop().await;
    assert_eq!(pg::totals(&pool, &schema).await["a"], (10, 4, 4));
    assert_eq!(pg::gaps(&pool, &schema).await, 0);
}
