//! Entities of two processes on one SQLite file write the same
//! entity at once. Every acknowledged event is stored exactly once, every
//! command answered with a conflict wrote nothing, a stale entity stops with
//! the conflict as its cause, and a respawned entity equals a replay.

use eventsourced::testkit::{
    counter::{Counter, Get},
    writers::{HANG, Journal, check_stored, run_test_in_child, write_rounds},
};
use eventsourced::{EntityRef, EventLog, EventSourcedExt, SeqNo, SerdeJson, SpawnError};
use eventsourced_sqlite::SqliteEventLog;
use futures::TryStreamExt;
use std::{
    path::Path,
    time::{Duration, Instant},
};
use tokio::time::timeout;

const CHILD_DB: &str = "ZZ_ENTITY_FAULTS_CHILD_DB";
const CHILD_JOURNAL: &str = "ZZ_ENTITY_FAULTS_CHILD_JOURNAL";
const RUN_FOR: Duration = Duration::from_secs(3);

async fn spawn(log: &SqliteEventLog) -> Result<EntityRef<Counter>, SpawnError> {
    Counter::default()
        .entity()
        .snapshot_every(3)
        .spawn(
            "shared".to_owned(),
            log.clone(),
            log.snapshot_store(),
            SerdeJson,
        )
        .await
}

/// One command at a time, for `RUN_FOR`.
async fn write(db: &Path, tag: u64, journal: &Journal) {
    let log = SqliteEventLog::open(db).expect("open");
    let until = Instant::now() + RUN_FOR;
    write_rounds(journal, tag, 1, || Instant::now() < until, || spawn(&log)).await;
}

/// The child: runs only when re-executed by the parent below.
#[test]
fn child_process_writer() {
    let (Ok(db), Ok(journal)) = (std::env::var(CHILD_DB), std::env::var(CHILD_JOURNAL)) else {
        return;
    };
    let journal = Journal::to_file(journal).expect("create the child's journal");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(write(Path::new(&db), 2, &journal));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_write_one_entity_on_one_file() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let child_journal = dir.path().join("child.journal");
    // Create the file before both processes write.
    drop(SqliteEventLog::open(&db).expect("create"));

    let mut child = run_test_in_child(
        "child_process_writer",
        &[
            (CHILD_DB, db.to_str().expect("a UTF-8 path")),
            (CHILD_JOURNAL, child_journal.to_str().expect("a UTF-8 path")),
        ],
    )
    .expect("start the child");
    let journal = Journal::new();
    write(&db, 1, &journal).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for the child");
    assert!(status.success(), "the child failed: {status}");
    let child = Journal::read(&child_journal).expect("the child's journal");
    assert!(!child.sent().is_empty(), "the child wrote nothing");
    journal.merge(&child);

    let log = SqliteEventLog::open(&db).expect("open");
    let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
        HANG,
        log.events_by_id("counter", "shared", SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    eprintln!("stored {}, {}", stored.len(), journal.summary());
    let expected = check_stored(&journal, &stored);
    // A local file never fails: every command is acknowledged or refused.
    assert_eq!(journal.failed(), Vec::<u64>::new(), "commands failed");
    assert_eq!(journal.spawn_failures(), Vec::<String>::new());
    assert_eq!(stored.len(), journal.acknowledged().len());
    assert!(!journal.refused().is_empty(), "the processes never raced");

    let entity = spawn(&log).await.expect("respawn");
    let state = entity.handle_command(Get).await.expect("get");
    assert_eq!(state, Ok(expected.0));
}
