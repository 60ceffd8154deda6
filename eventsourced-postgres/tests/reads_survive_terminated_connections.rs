//! Reads right after PostgreSQL terminated every idle connection of the pool
//! (as a restart or failover does): the dead connections look alive until
//! used, and each read must still succeed, on a fresh connection, instead of
//! failing with "terminating connection due to administrator command".

mod support;

use eventsourced::{EventLog, Position, SeqNo, SnapshotStore};
use eventsourced_postgres::PostgresSnapshotStore;
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;
use support::TestDb;
use tokio::time::timeout;

const ROUNDS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_terminated_connections_succeed() {
    let db = TestDb::new();
    let log = db.log().await;
    let store = PostgresSnapshotStore::from_log(&log);
    store.setup().await.expect("snapshot setup");
    let raw = db.raw().await;
    let live = log.events_by_type("reads", Position::START);
    let mut live = std::pin::pin!(live);

    for round in 1..=ROUNDS {
        log.append("reads", "r-1", SeqNo::new(round - 1), &["e".into()])
            .await
            .expect("append (the writer reconnects on its own)");
        // Terminate every connection of this log but the writer's: the pool's
        // idle ones now look alive and are dead.
        raw.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid() AND state = 'idle'",
            &[&db.config.application_name],
        )
        .await
        .expect("terminate the pool's connections");

        let within = |what: &str| format!("round {round}: {what} must not hang");
        let events: Vec<_> = timeout(
            Duration::from_secs(20),
            log.events_by_id("reads", "r-1", SeqNo::new(1))
                .try_collect(),
        )
        .await
        .unwrap_or_else(|_| panic!("{}", within("events_by_id")))
        .unwrap_or_else(|e| panic!("round {round}: events_by_id after the kill: {e}"));
        assert_eq!(events.len() as u64, round);

        let last = timeout(Duration::from_secs(20), log.last_seq_no("reads", "r-1"))
            .await
            .unwrap_or_else(|_| panic!("{}", within("last_seq_no")))
            .unwrap_or_else(|e| panic!("round {round}: last_seq_no after the kill: {e}"));
        assert_eq!(last, SeqNo::new(round));

        store
            .save("reads", "r-1", SeqNo::new(round), "state".into())
            .await
            .unwrap_or_else(|e| panic!("round {round}: snapshot save after the kill: {e}"));
        let loaded = store
            .load("reads", "r-1")
            .await
            .unwrap_or_else(|e| panic!("round {round}: snapshot load after the kill: {e}"));
        assert_eq!(loaded.map(|(seq_no, _)| seq_no), Some(SeqNo::new(round)));

        let envelope = timeout(Duration::from_secs(20), live.next())
            .await
            .unwrap_or_else(|_| panic!("{}", within("the live stream")))
            .expect("the live stream does not end")
            .unwrap_or_else(|e| panic!("round {round}: live events_by_type after the kill: {e}"));
        assert_eq!(envelope.seq_no, SeqNo::new(round));
    }
}
