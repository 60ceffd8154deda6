//! SQLite offsets: exactly-once batches in the read model's file, rollback on
//! failure, rebuild, and the lease row.
#![cfg(feature = "sqlite")]

mod support;

use eventsourced::{MemoryEventLog, Position, SerdeJson};
use eventsourced_projection::{
    Delivery, InProcessLease, Lease, OffsetStore, Phase, Projection,
    sqlite::{SqliteLease, SqliteOffsetStore, rusqlite::params},
};
use std::{collections::HashMap, time::Duration};
use support::{WAIT, append, sq};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_model_and_offset_commit_together_in_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.db");
    let store = SqliteOffsetStore::open(&path).await.expect("open");
    sq::create_totals(&store).await;
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    append(&log, "counter", "b", &[10]).await;

    // Position 3 fails once after writing; Stop: 1 and 2 commit, 3 rolls back
    // (one attempt: the Stop strategy does not try it again).
    let handler = sq::SqTotals {
        fail: HashMap::from([(3, 1)]),
    };
    let p = Projection::builder(
        "sq",
        "counter",
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(handler),
    )
    .batch_size(10)
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Failed, WAIT)
        .await
        .expect("stops");
    assert_eq!(s.delivery, Delivery::ExactlyOnce);
    assert_eq!(s.offset, Some(Position::new(2)));
    assert_eq!(sq::totals(&store).await["a"], (3, 2, 2));

    p.run().await;
    if p.wait_for(|s| s.offset == Some(Position::new(4)), WAIT)
        .await
        .is_none()
    {
        panic!("did not go on: {:?}", p.state().await);
    }
    p.stop().await;
    let totals = sq::totals(&store).await;
    assert_eq!((totals["a"], totals["b"]), ((6, 3, 3), (10, 1, 1)));

    // A new store on the same file resumes from the stored offset.
    let store2 = SqliteOffsetStore::open(&path).await.expect("reopen");
    assert_eq!(store2.load("sq").await.unwrap(), Some(Position::new(4)));
    append(&log, "counter", "b", &[5]).await;
    let p2 = Projection::builder(
        "sq",
        "counter",
        log.clone(),
        SerdeJson,
        store2.clone().exactly_once(sq::SqTotals::default()),
    )
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p2.run().await;
    p2.wait_for(|s| s.offset == Some(Position::new(5)), WAIT)
        .await
        .expect("resumes");
    assert_eq!(p2.state().await.handled, 1);

    p2.rebuild().await;
    p2.wait_for(|s| s.handled == 6, WAIT)
        .await
        .expect("rebuilt");
    p2.stop().await;
    let totals = sq::totals(&store2).await;
    assert_eq!((totals["a"], totals["b"]), ((6, 3, 3), (15, 2, 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lease_row_passes_on_stop_and_after_its_holder_died() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lease.db");
    let store = SqliteOffsetStore::open(&path).await.expect("open");
    sq::create_totals(&store).await;
    let log = MemoryEventLog::default();
    // A ttl generous enough that a renewal (a write with fsync, every ttl / 3)
    // finishes in time on a loaded CI machine.
    let ttl = Duration::from_millis(1500);
    let lease = SqliteLease::new(&path)
        .ttl(ttl)
        .retry_interval(Duration::from_millis(20));

    // A dead holder left its row behind: the projection waits for its expiry.
    let expired_in = Duration::from_millis(600);
    store
        .with_connection(move |c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS projection_leases (
                     name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at INTEGER NOT NULL)",
            )?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            let expires = i64::try_from(now + expired_in.as_millis()).unwrap();
            c.execute(
                "INSERT INTO projection_leases VALUES ('leased', 'dead-process', ?1)",
                params![expires],
            )
            .map(|_| ())
        })
        .await
        .unwrap();
    let make = || {
        Projection::builder(
            "leased",
            "counter",
            log.clone(),
            SerdeJson,
            store.clone().exactly_once(sq::SqTotals::default()),
        )
        .max_wait(Duration::ZERO)
        .lease(lease.clone())
        .build()
        .unwrap()
    };
    let (p1, p2) = (make(), make());
    append(&log, "counter", "a", &[1]).await;
    p1.run().await;
    let started = std::time::Instant::now();
    p1.wait_for(|s| s.phase == Phase::WaitingForLease, WAIT)
        .await
        .expect("waits");
    p1.wait_for(|s| s.offset == Some(Position::new(1)), WAIT)
        .await
        .expect("takes over");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "took the lease before the dead holder's row expired"
    );

    p2.run().await;
    p2.wait_for(|s| s.phase == Phase::WaitingForLease, WAIT)
        .await
        .expect("second waits");
    // Longer than the ttl: the holder renews, the second keeps waiting.
    tokio::time::sleep(ttl + Duration::from_millis(500)).await;
    assert_eq!(p2.state().await.phase, Phase::WaitingForLease);
    append(&log, "counter", "a", &[2]).await;
    p1.wait_for(|s| s.offset == Some(Position::new(2)), WAIT)
        .await
        .expect("first handles");

    p1.stop().await;
    p2.wait_for(|s| s.phase == Phase::Running, WAIT)
        .await
        .expect("second takes over");
    append(&log, "counter", "a", &[3]).await;
    p2.wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("second handles");
    p2.stop().await;
    assert_eq!(sq::totals(&store).await["a"], (6, 3, 3));

    // The lease itself: a second acquire waits until the first guard is dropped.
    let lease = SqliteLease::new(&path)
        .ttl(Duration::from_secs(5))
        .retry_interval(Duration::from_millis(10));
    let guard = lease.acquire("direct").await.unwrap();
    let second = lease.acquire("direct");
    tokio::pin!(second);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), second.as_mut())
            .await
            .is_err()
    );
    drop(guard);
    tokio::time::timeout(WAIT, second)
        .await
        .expect("acquired after release")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_comes_from_a_counting_query_in_the_file() {
    use eventsourced_projection::{LagSource, sqlite::SqliteLag};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteOffsetStore::open(dir.path().join("lag.db"))
        .await
        .unwrap();
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TABLE events (position INTEGER PRIMARY KEY, type_name TEXT NOT NULL);
                 INSERT INTO events VALUES (1, 'counter'), (2, 'other'), (3, 'counter'), (4, 'counter');",
            )
        })
        .await
        .unwrap();
    let lag = SqliteLag::with_query(
        &store,
        "SELECT count(*) FROM events WHERE type_name = ?1 AND position > ?2",
    );
    assert_eq!(lag.events_after("counter", None).await.unwrap(), 3);
    assert_eq!(
        lag.events_after("counter", Some(Position::new(1)))
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        lag.events_after("counter", Some(Position::new(4)))
            .await
            .unwrap(),
        0
    );
    let broken = SqliteLag::with_query(&store, "SELECT count(*) FROM missing");
    assert!(broken.events_after("counter", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lag_from_another_file_with_its_own_connection() {
    use eventsourced_projection::{LagSource, sqlite::SqliteLag};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.db");
    let writer = SqliteOffsetStore::open(&path).await.unwrap();
    writer
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TABLE events (position INTEGER PRIMARY KEY, type_name TEXT NOT NULL);
                 INSERT INTO events VALUES (1, 'counter'), (2, 'counter');",
            )
        })
        .await
        .unwrap();
    let lag = SqliteLag::open(&path, SqliteLag::EVENT_LOG_QUERY)
        .await
        .unwrap();
    assert_eq!(
        lag.events_after("counter", Some(Position::new(1)))
            .await
            .unwrap(),
        1
    );
    assert!(
        SqliteLag::open(dir.path().join("missing.db"), SqliteLag::EVENT_LOG_QUERY)
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_sqlite_event_log_with_offsets_in_its_file() {
    use eventsourced_projection::{LagSource, sqlite::SqliteLag};
    use eventsourced_sqlite::SqliteEventLog;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    // The log creates the file; the offsets and the read model join it.
    let log = SqliteEventLog::open(&path).expect("open the log");
    append(&log, "counter", "a", &[1, 2, 3]).await;
    let store = SqliteOffsetStore::open(&path)
        .await
        .expect("open the store");
    sq::create_totals(&store).await;
    let lag = SqliteLag::open(&path, SqliteLag::EVENT_LOG_QUERY)
        .await
        .unwrap();
    assert_eq!(lag.events_after("counter", None).await.unwrap(), 3);

    let p = Projection::builder(
        "on-log",
        "counter",
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(sq::SqTotals::default()),
    )
    .lease(SqliteLease::new(&path))
    .lag_source(lag)
    .build()
    .unwrap();
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(3)), WAIT)
        .await
        .expect("catches up");
    append(&log, "counter", "b", &[10, 20]).await;
    p.wait_for(|s| s.offset == Some(Position::new(5)), WAIT)
        .await
        .expect("follows the live log");
    assert_eq!(p.state().await.lag, Some(0));
    p.stop().await;
    let totals = sq::totals(&store).await;
    assert_eq!((totals["a"], totals["b"]), ((6, 3, 3), (30, 2, 2)));

    // The log still opens its file with the projection's tables in it.
    drop((p, log));
    let log = SqliteEventLog::open(&path).expect("reopen the log");
    append(&log, "counter", "a", &[4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_cannot_renew_gives_the_lease_up_before_its_row_expires() {
    use eventsourced_projection::sqlite::rusqlite::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stuck.db");
    let ttl = Duration::from_millis(1500);
    let lease = SqliteLease::new(&path)
        .ttl(ttl)
        .retry_interval(Duration::from_millis(10));
    let mut guard = lease.acquire("stuck").await.unwrap();
    let acquired = std::time::Instant::now();

    // Another connection holds the file's write lock: every renewal waits in
    // its busy timeout (10 s), far past the ttl.
    let blocker = Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let reason = tokio::time::timeout(WAIT, guard.lost())
        .await
        .expect("the stuck holder reports the lease lost");
    let lost_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        acquired.elapsed() < ttl,
        "gave up {:?} after taking the lease, ttl {ttl:?}",
        acquired.elapsed()
    );
    let expires_at: i64 = blocker
        .query_row(
            "SELECT expires_at FROM projection_leases WHERE name = 'stuck'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        lost_at_ms <= u128::try_from(expires_at).unwrap(),
        "the holder still counted itself the owner {} ms after its row expired",
        lost_at_ms - u128::try_from(expires_at).unwrap()
    );
    assert!(reason.contains("4/5 of its ttl"), "{reason}");
    blocker.execute_batch("COMMIT").unwrap();
}
