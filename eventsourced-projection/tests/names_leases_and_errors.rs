//! The storage side refuses what it cannot keep and says what went wrong:
//! projection names, lease settings and backoffs that could never work are
//! refused by `build()`, PostgreSQL errors carry the server's message, and a
//! lease is free for other processes once `stop()` returns.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod support;

use eventsourced::{MemoryEventLog, Position, SerdeJson};
use eventsourced_projection::{
    AtLeastOnce, InProcessLease, Lease, MemoryOffsetStore, Phase, Projection, ProjectionError,
    postgres::{PostgresLease, PostgresOffsetStore},
    sqlite::SqliteLease,
};
use std::time::Duration;
use support::{WAIT, append, pg, unique};

async fn pg_store(pool: &deadpool_postgres::Pool, schema: &str) -> PostgresOffsetStore {
    let store = PostgresOffsetStore::new(pool.clone(), schema).expect("valid schema");
    store.setup().await.expect("setup");
    store
}

/// A projection name is either refused by `build()` or works (rather than be
/// accepted and then fail every commit, restarting forever).
async fn name_is_refused_or_works(name: String) {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "odd_name").await;
    let store = pg_store(&pool, &schema).await;
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1, 2, 3]).await;
    let handler = pg::PgTotals::new(&schema);
    let built = Projection::builder(
        name.clone(),
        "counter",
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(handler),
    )
    .max_wait(Duration::from_millis(5))
    .lease(InProcessLease::default())
    .restart_backoff(Duration::from_millis(50), Duration::from_millis(100))
    .build();
    let p = match built {
        Err(e) => {
            eprintln!("refused: {e}");
            return;
        }
        Ok(p) => p,
    };
    p.run().await;
    let done = p
        .wait_for(
            |s| s.offset == Some(Position::new(3)),
            Duration::from_secs(5),
        )
        .await;
    let state = p.state().await;
    p.stop().await;
    assert!(
        done.is_some(),
        "name of {} bytes accepted by build() but the projection never commits: phase {:?}, last error {:?}",
        name.len(),
        state.phase,
        state.last_error.map(|e| e.message)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_with_a_nul_byte_is_refused_or_works() {
    name_is_refused_or_works("tot\0als".to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_very_long_name_is_refused_or_works() {
    use rand::{Rng, distr::Alphanumeric};
    let name: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(8000)
        .map(char::from)
        .collect();
    name_is_refused_or_works(name).await;
}

/// Names that work must keep working: dots, spaces, quotes, unicode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_work_on_postgres() {
    for name in ["a.b c", "o'brien\"; drop table x; --", "zählung-✓", "*>"] {
        name_is_refused_or_works(name.to_owned()).await;
    }
}

/// A SqliteLease with a ttl beyond what an Instant holds is held, not lost
/// at once to a panic in its renew task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_lease_with_a_huge_ttl_is_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = SqliteLease::new(dir.path().join("lease.db")).ttl(Duration::MAX);
    let mut guard = lease.acquire("p").await.expect("acquire");
    let lost = tokio::time::timeout(Duration::from_secs(2), guard.lost()).await;
    assert!(
        lost.is_err(),
        "the lease was lost without anything happening: {lost:?}"
    );
}

/// An invalid SqliteLease ttl is refused by the builder, naming the lease,
/// not found out by a projection that restarts forever.
#[test]
fn an_invalid_sqlite_lease_ttl_is_refused_by_build() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = SqliteLease::new(dir.path().join("lease.db")).ttl(Duration::from_millis(1));
    let built = Projection::builder(
        "p",
        "counter",
        MemoryEventLog::default(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), support::Recorder::default()),
    )
    .lease(lease)
    .build();
    match built {
        Err(ProjectionError::InvalidConfig { what, reason }) => {
            assert_eq!(what, "lease");
            assert!(reason.contains("ttl"), "{reason}");
        }
        other => panic!("a 1 ms ttl must be refused by build(), got {other:?}"),
    }
}

/// When `stop()` returns, another process can take a PostgresLease's lock at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_lease_is_free_when_stop_returns() {
    let url = support::database_url();
    let name = unique("lease");
    let lease = PostgresLease::from_url(&url).expect("url");
    let log = MemoryEventLog::default();
    let p = Projection::builder(
        name.clone(),
        "counter",
        log,
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), support::Recorder::default()),
    )
    .lease(lease)
    .build()
    .expect("valid");
    let pool = pg::pool().await;
    let other = pool.get().await.expect("connection");
    let key = PostgresLease::key("public", &name);
    let mut failures = 0;
    for _ in 0..10 {
        p.run().await;
        p.wait_for(|s| s.phase == Phase::Running, WAIT)
            .await
            .expect("running");
        p.stop().await;
        let locked: bool = other
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .expect("try lock")
            .get(0);
        if locked {
            let _: bool = other
                .query_one("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .expect("unlock")
                .get(0);
        } else {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 0,
        "after stop() returned, the advisory lock was still held {failures}/10 times"
    );
}

/// PostgreSQL leases of one projection name exclude each other in the same
/// scope only: two deployments in different schemas of one database both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_of_one_name_exclude_each_other_per_scope_only() {
    let url = support::database_url();
    let name = unique("scoped");
    let lease = |scope: &str| {
        PostgresLease::from_url(&url)
            .expect("url")
            .retry_interval(Duration::from_millis(20))
            .scope(scope)
    };
    let (billing, shipping) = (lease("billing"), lease("shipping"));
    let held = billing.acquire(&name).await.expect("billing's lease");
    let other = tokio::time::timeout(WAIT, shipping.acquire(&name))
        .await
        .expect("another scope is not blocked by billing's lease")
        .expect("shipping's lease");
    let same = lease("billing");
    let blocked = tokio::time::timeout(Duration::from_millis(300), same.acquire(&name)).await;
    assert!(blocked.is_err(), "billing's lease was taken twice");
    held.release().await;
    let taken = tokio::time::timeout(WAIT, same.acquire(&name))
        .await
        .expect("free once released")
        .expect("billing's lease again");
    taken.release().await;
    other.release().await;
}

/// The offset store's PostgreSQL errors carry the server's message (here:
/// the table does not exist), not only tokio-postgres's "db error".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_offset_store_errors_say_what_went_wrong() {
    use eventsourced_projection::OffsetStore;
    let pool = pg::pool().await;
    let schema = unique("nosetup");
    // No setup(): the offsets table does not exist.
    let store = PostgresOffsetStore::new(pool.clone(), &schema).expect("valid schema");
    let err = store.load("p").await.expect_err("no table");
    let shown = err.to_string();
    assert!(
        shown.contains("does not exist"),
        "the error does not name the cause: {shown:?}"
    );
}

/// SQLite names with a NUL byte, very long names and odd characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_names_do_not_collide_in_sqlite() {
    use eventsourced_projection::{OffsetStore, sqlite::SqliteOffsetStore};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteOffsetStore::open(dir.path().join("o.db"))
        .await
        .expect("open");
    let long = "x".repeat(100_000);
    let names = ["a", "a\0b", "a\0c", "a ", "A", "ä", long.as_str()];
    for (i, n) in names.iter().enumerate() {
        store
            .save(n, Position::new(i as u64 + 1))
            .await
            .expect("save");
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(
            store.load(n).await.expect("load"),
            Some(Position::new(i as u64 + 1)),
            "name {:?}",
            &n[..n.len().min(10)]
        );
    }
}

/// A PostgresHandler failing on SQL: the projection's last error says what
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_sql_error_is_readable_in_last_error() {
    use eventsourced_projection::{
        ErrorStrategy, HandlerError, ProjectedEvent,
        postgres::{PostgresHandler, tokio_postgres::Transaction},
    };
    struct Bad;
    impl PostgresHandler for Bad {
        type Event = i64;
        async fn handle(
            &mut self,
            tx: &Transaction<'_>,
            _: &ProjectedEvent<i64>,
        ) -> Result<(), HandlerError> {
            tx.execute("INSERT INTO no_such_table_here VALUES (1)", &[])
                .await?;
            Ok(())
        }
    }
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "handler_err").await;
    let store = pg_store(&pool, &schema).await;
    let log = MemoryEventLog::default();
    append(&log, "counter", "a", &[1]).await;
    let p = Projection::builder("p", "counter", log, SerdeJson, store.exactly_once(Bad))
        .error_strategy(ErrorStrategy::Stop)
        .lease(InProcessLease::default())
        .build()
        .expect("valid");
    p.run().await;
    let s = p
        .wait_for(|s| s.phase == Phase::Failed, WAIT)
        .await
        .expect("fails");
    let msg = s.last_error.expect("error").message;
    assert!(
        msg.contains("no_such_table_here"),
        "the error does not say what failed: {msg:?}"
    );
}

/// When `stop()` returns, a SqliteLease's row is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_lease_row_is_gone_when_stop_returns() {
    use eventsourced_projection::sqlite::rusqlite::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lease.db");
    let p = Projection::builder(
        "p",
        "counter",
        MemoryEventLog::default(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), support::Recorder::default()),
    )
    .lease(SqliteLease::new(&path))
    .build()
    .expect("valid");
    let mut failures = 0;
    for _ in 0..10 {
        p.run().await;
        p.wait_for(|s| s.phase == Phase::Running, WAIT)
            .await
            .expect("running");
        p.stop().await;
        let conn = Connection::open(&path).expect("open");
        let rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM projection_leases WHERE name = 'p'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        if rows != 0 {
            failures += 1;
        }
        // Let the background delete finish before the next round.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        failures, 0,
        "after stop() returned, the lease row was still there {failures}/10 times"
    );
}

/// A zero restart backoff is refused: infrastructure errors would restart
/// in a busy loop.
#[test]
fn a_zero_restart_backoff_is_refused() {
    use eventsourced_projection::ProjectionConfig;
    let config: ProjectionConfig =
        serde_json::from_str(r#"{"restart-min-backoff": "0s", "restart-max-backoff": "0s"}"#)
            .expect("parses");
    let built = Projection::builder(
        "p",
        "counter",
        MemoryEventLog::default(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), support::Recorder::default()),
    )
    .config(config)
    .build();
    match built {
        Err(ProjectionError::InvalidConfig { what, .. }) => {
            assert_eq!(what, "restart-min-backoff");
        }
        other => panic!("a zero restart backoff must be refused by build(), got {other:?}"),
    }
}
