//! Positions and seq_nos are BIGINTs: at the top of their range the log still
//! yields each event once, never yields one below the requested start, and an
//! append that takes the last seq_no succeeds without stopping the log.

mod support;

use eventsourced::{EventLog, EventLogError, Position, SeqNo};
use eventsourced_postgres::PostgresEventLog;
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;
use support::{TestDb, ev};
use tokio::time::timeout;

/// Long enough for several polls (the tests poll every 200 ms).
const QUIET: Duration = Duration::from_secs(1);

/// Moves the log's position counter so that its next event gets i64::MAX.
async fn next_position_is_i64_max(db: &TestDb, log: &PostgresEventLog) {
    db.raw()
        .await
        .batch_execute(&format!(
            "UPDATE {} SET last = {}",
            log.tables().positions(),
            i64::MAX - 1
        ))
        .await
        .expect("move the position counter");
}

/// Stores event `seq_no` of entity `top`/`id` directly, following the
/// position protocol (lock, position row), so the log has not seen it.
async fn insert_raw(db: &TestDb, log: &PostgresEventLog, id: &str, seq_no: i64) {
    let (table, positions) = (log.tables().events(), log.tables().positions());
    db.raw()
        .await
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({key});
             UPDATE {positions} SET last = last + 1;
             INSERT INTO {table} (position, type_name, id, seq_no, event)
               SELECT last, 'top', '{id}', {seq_no}, '\\x00'::bytea FROM {positions};
             COMMIT;",
            key = log.tables().lock_key(),
        ))
        .await
        .expect("insert");
}

/// A live stream yields the event at position i64::MAX once, then waits
/// (no event can follow it), without repeating it or failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_position_i64_max_is_yielded_once() {
    let db = TestDb::new();
    let log = db.log().await;
    next_position_is_i64_max(&db, &log).await;
    log.append("top", "a", SeqNo::ZERO, &[ev("last")])
        .await
        .expect("append at the top");
    let mut stream = Box::pin(log.events_by_type("top", Position::START));
    let first = timeout(QUIET, stream.next())
        .await
        .expect("the event comes")
        .expect("open")
        .expect("no error");
    assert_eq!(
        (first.position.get(), first.id.as_str(), first.seq_no),
        (i64::MAX as u64, "a", SeqNo::new(1))
    );
    let next = timeout(QUIET, stream.next()).await;
    assert!(
        next.is_err(),
        "after the event at i64::MAX the stream must wait, got {next:?}"
    );
}

/// `events_by_type` from a position beyond i64::MAX yields nothing (every
/// stored position is lower) and waits, even with an event at i64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_by_type_from_beyond_i64_max_yields_nothing() {
    let db = TestDb::new();
    let log = db.log().await;
    next_position_is_i64_max(&db, &log).await;
    log.append("top", "a", SeqNo::ZERO, &[ev("last")])
        .await
        .expect("append at the top");
    for from in [i64::MAX as u64 + 1, u64::MAX] {
        let first = timeout(
            QUIET,
            Box::pin(log.events_by_type("top", Position::new(from))).next(),
        )
        .await;
        assert!(
            first.is_err(),
            "from position {from}: the stream must wait, got {first:?}"
        );
    }
    // The event itself is there, from its own position.
    let at = timeout(
        QUIET,
        Box::pin(log.events_by_type("top", Position::new(i64::MAX as u64))).next(),
    )
    .await
    .expect("the event comes")
    .expect("open")
    .expect("no error");
    assert_eq!(at.position.get(), i64::MAX as u64);
}

/// `events_by_id` from a seq_no beyond i64::MAX is empty, even for an entity
/// whose last event is i64::MAX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_by_id_from_beyond_i64_max_is_empty() {
    let db = TestDb::new();
    let log = db.log().await;
    insert_raw(&db, &log, "a", i64::MAX).await;
    let read = |from: u64| {
        log.events_by_id("top", "a", SeqNo::new(from))
            .map_ok(|(seq_no, _)| seq_no.get())
            .try_collect::<Vec<_>>()
    };
    assert_eq!(
        read(i64::MAX as u64).await.expect("read"),
        [i64::MAX as u64]
    );
    for from in [i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(
            read(from).await.expect("read"),
            Vec::<u64>::new(),
            "from {from}"
        );
    }
    // Ids are still checked first.
    let refused: Result<Vec<_>, _> = log
        .events_by_id("top", "", SeqNo::new(u64::MAX))
        .try_collect()
        .await;
    assert!(
        matches!(refused, Err(EventLogError::InvalidId { .. })),
        "{refused:?}"
    );
}

/// An append whose last event gets seq_no i64::MAX succeeds, through the
/// checking statement (predecessor unknown to the log) and through the
/// one-statement path (predecessor known), and the log goes on: a further
/// append of that entity is refused as out of range, others are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_reaching_seq_no_i64_max_succeeds_and_the_log_goes_on() {
    let db = TestDb::new();
    let log = db.log().await;
    let below_top = SeqNo::new(i64::MAX as u64 - 1);
    let top = SeqNo::new(i64::MAX as u64);
    insert_raw(&db, &log, "checked", i64::MAX - 1).await;
    insert_raw(&db, &log, "known", i64::MAX - 1).await;
    assert_eq!(
        log.append("top", "checked", below_top, &[ev("max")])
            .await
            .expect("append through the checking statement"),
        top
    );
    // Reading the last seq_no lets the log know the predecessor is stored.
    assert_eq!(
        log.last_seq_no("top", "known").await.expect("last"),
        below_top
    );
    assert_eq!(
        log.append("top", "known", below_top, &[ev("max")])
            .await
            .expect("append through the one-statement path"),
        top
    );
    for id in ["checked", "known"] {
        let stored: Vec<_> = log
            .events_by_id("top", id, top)
            .try_collect()
            .await
            .expect("read");
        assert_eq!(stored, [(top, ev("max"))], "{id}");
        let beyond = log.append("top", id, top, &[ev("more")]).await;
        assert!(
            matches!(&beyond, Err(EventLogError::Backend { .. }))
                && beyond
                    .as_ref()
                    .is_err_and(|e| e.to_string().contains("out of range")),
            "{id}: {beyond:?}"
        );
    }
    assert_eq!(
        log.append("other", "b", SeqNo::ZERO, &[ev("x")])
            .await
            .expect("the log still appends"),
        SeqNo::new(1)
    );
}
