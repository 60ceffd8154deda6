//! Entities on two logs (as two processes) write one entity
//! in batches while PostgreSQL terminates the logs' connections again and
//! again; snapshots are on. Acknowledged events are stored exactly once,
//! conflicts wrote nothing, stale entities stop with the conflict, and the
//! respawned entity (from its snapshot) equals a replay of the log.

mod support;

use eventsourced::testkit::{
    counter::{Counter, Get},
    writers::{HANG, Journal, check_stored, write_rounds},
};
use eventsourced::{EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_postgres::{PostgresEventLog, PostgresSnapshotStore};
use futures::TryStreamExt;
use std::time::{Duration, Instant};
use support::TestDb;
use tokio::time::timeout;

async fn write(log: PostgresEventLog, store: PostgresSnapshotStore, tag: u64) -> Journal {
    let journal = Journal::new();
    let until = Instant::now() + Duration::from_secs(4);
    let spawn = || {
        Counter::default().entity().snapshot_every(4).spawn(
            "shared".to_owned(),
            log.clone(),
            store.clone(),
            SerdeJson,
        )
    };
    write_rounds(&journal, tag, 5, || Instant::now() < until, spawn).await;
    journal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_logs_and_terminated_connections_keep_one_entity_exact() {
    let db = TestDb::new();
    let log_a = db.log().await;
    let log_b = db.log().await;
    let store_a = PostgresSnapshotStore::from_log(&log_a);
    store_a.setup().await.expect("snapshot setup");
    let store_b = PostgresSnapshotStore::from_log(&log_b);
    let raw = db.raw().await;

    let a = tokio::spawn(write(log_a, store_a, 1));
    let b = tokio::spawn(write(log_b, store_b, 2));
    let app = db.config.application_name.clone();
    let killer = tokio::spawn(async move {
        let mut kills = 0;
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rows = raw
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    &[&app],
                )
                .await
                .expect("terminate");
            kills += rows.len();
        }
        kills
    });
    let journal = timeout(Duration::from_secs(60), a)
        .await
        .expect("writer a hung")
        .expect("a");
    let b = timeout(Duration::from_secs(60), b)
        .await
        .expect("writer b hung")
        .expect("b");
    journal.merge(&b);
    let kills = killer.await.expect("killer");

    let log = db.log().await;
    let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
        HANG,
        log.events_by_id("counter", "shared", SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    eprintln!(
        "kills {kills}, stored {}, {}",
        stored.len(),
        journal.summary()
    );
    let expected = check_stored(&journal, &stored);
    assert!(!journal.refused().is_empty(), "the two logs never raced");

    // Respawn (snapshot + events) equals the replay.
    let store = PostgresSnapshotStore::from_log(&log);
    let entity = Counter::default()
        .entity()
        .snapshot_every(4)
        .spawn("shared".to_owned(), log, store, SerdeJson)
        .await
        .expect("respawn");
    let state = entity.handle_command(Get).await.expect("get");
    assert_eq!(state, Ok(expected.0));
}
