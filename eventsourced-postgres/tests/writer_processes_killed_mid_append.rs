//! Writer processes of one entity are killed with `kill -9` again and again,
//! mid-append, while this process writes the same entity through the same
//! PostgreSQL schema; snapshots are on. Every acknowledged event (of any
//! process) is stored exactly once, conflicts wrote nothing, a killed
//! writer's open transaction neither blocks the survivors nor leaves a gap,
//! and a respawned entity equals a replay of the log.

mod support;

use eventsourced::testkit::{
    counter::{Counter, Get},
    writers::{HANG, Journal, check_stored, child_writer, kill_writers, write_rounds},
};
use eventsourced::{EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_postgres::{PostgresConfig, PostgresEventLog, PostgresSnapshotStore};
use futures::TryStreamExt;
use std::time::{Duration, Instant};
use support::{TestDb, database_url};
use tokio::time::timeout;

const CHILD_SCHEMA: &str = "ZZ_PG_KILLED_WRITER_SCHEMA";
const RUN_FOR: Duration = Duration::from_secs(6);

async fn open(config: PostgresConfig) -> (PostgresEventLog, PostgresSnapshotStore) {
    let log = PostgresEventLog::new(config).await.expect("connect");
    let store = PostgresSnapshotStore::from_log(&log);
    (log, store)
}

async fn write(
    log: &PostgresEventLog,
    store: &PostgresSnapshotStore,
    journal: &Journal,
    tag: u64,
    mut keep_going: impl FnMut() -> bool,
) {
    let spawn = || {
        Counter::default().entity().snapshot_every(5).spawn(
            "shared".to_owned(),
            log.clone(),
            store.clone(),
            SerdeJson,
        )
    };
    write_rounds(journal, tag, 4, &mut keep_going, spawn).await;
}

/// The child: writes until it is killed. Runs only when started by the parent.
#[test]
fn child_process_writer() {
    let (Ok(schema), Some((journal, tag))) = (std::env::var(CHILD_SCHEMA), child_writer()) else {
        return;
    };
    let mut config = PostgresConfig::from_url(&database_url()).expect("DATABASE_URL");
    config.schema = schema;
    config.pool_size = 2;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (log, store) = open(config).await;
        write(&log, &store, &journal, tag, || true).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_writer_processes_lose_no_acknowledged_event() {
    let db = TestDb::new();
    let log = db.log().await;
    let store = db.snapshots().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let parent = tokio::spawn({
        let (log, store) = (log.clone(), store.clone());
        async move {
            let journal = Journal::new();
            let until = Instant::now() + RUN_FOR;
            write(&log, &store, &journal, 1, || Instant::now() < until).await;
            journal
        }
    });
    let children = RUN_FOR - Duration::from_millis(500);
    let env = [(CHILD_SCHEMA, db.config.schema.as_str())];
    let killed = kill_writers("child_process_writer", &env, dir.path(), children).await;
    let journal = timeout(Duration::from_secs(60), parent)
        .await
        .expect("the parent's writer hung")
        .expect("the parent's writer");
    journal.merge(&killed.journal);

    let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
        HANG,
        log.events_by_id("counter", "shared", SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    eprintln!(
        "{} children ({} acknowledged something), stored {}, {}, in flight when killed {}",
        killed.children,
        killed.acknowledged_something,
        stored.len(),
        journal.summary(),
        journal.in_flight()
    );
    let expected = check_stored(&journal, &stored);
    assert!(
        killed.acknowledged_something > 0,
        "no child got an event acknowledged"
    );
    assert!(!journal.refused().is_empty(), "the writers never raced");
    assert_eq!(journal.failed(), Vec::<u64>::new(), "the server stayed up");

    let entity = Counter::default()
        .entity()
        .snapshot_every(5)
        .spawn("shared".to_owned(), log, store, SerdeJson)
        .await
        .expect("respawn");
    let state = entity.handle_command(Get).await.expect("get");
    assert_eq!(state, Ok(expected.0));
}
