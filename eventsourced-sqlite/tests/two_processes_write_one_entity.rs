//! Entities of two processes on one SQLite file write the same
//! entity at once. Every acknowledged event is stored exactly once, every
//! command answered with a conflict wrote nothing, a stale entity stops with
//! the conflict as its cause, and a respawned entity equals a replay.

mod support;

use eventsourced::{EntityRef, EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_sqlite::SqliteEventLog;
use futures::TryStreamExt;
use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};
use support::{Add, Get, Tally, decode};
use tokio::time::timeout;

const CHILD_DB: &str = "ZZ_ENTITY_FAULTS_CHILD_DB";
const CHILD_OUT: &str = "ZZ_ENTITY_FAULTS_CHILD_OUT";
const HANG: Duration = Duration::from_secs(20);
const RUN_FOR: Duration = Duration::from_secs(3);

struct Outcome {
    acked: Vec<u64>,
    refused: Vec<u64>,
    errors: Vec<String>,
}

async fn spawn(log: &SqliteEventLog) -> EntityRef<Tally> {
    timeout(
        HANG,
        Tally::default().entity().snapshot_every(3).spawn(
            "shared".to_owned(),
            log.clone(),
            log.snapshot_store(),
            SerdeJson,
        ),
    )
    .await
    .expect("spawn hung")
    .expect("spawn")
}

async fn write(db: &Path, tag: u64) -> Outcome {
    let log = SqliteEventLog::open(db).expect("open");
    let mut out = Outcome {
        acked: vec![],
        refused: vec![],
        errors: vec![],
    };
    let started = Instant::now();
    let mut entity = spawn(&log).await;
    let mut i = 0;
    while started.elapsed() < RUN_FOR {
        i += 1;
        let value = tag * 1_000_000 + i;
        let result = timeout(HANG, entity.handle_command(Add(value)))
            .await
            .expect("a command hung");
        match result {
            Ok(Ok(_)) => out.acked.push(value),
            Ok(Err(never)) => match never {},
            Err(error) if error.is_conflict() => {
                out.refused.push(value);
                // The stale entity stopped; its handles report the conflict.
                let again = timeout(HANG, entity.handle_command(Get))
                    .await
                    .expect("a send to a stopped entity hung");
                match again {
                    Err(cause) if cause.is_conflict() => {}
                    other => out.errors.push(format!(
                        "a stopped entity answered {other:?}, not its conflict"
                    )),
                }
                entity = spawn(&log).await;
            }
            Err(error) => {
                out.errors.push(error.to_string());
                entity = spawn(&log).await;
            }
        }
    }
    out
}

/// The child: runs only when re-executed by the parent below.
#[test]
fn child_process_writer() {
    let (Ok(db), Ok(out)) = (std::env::var(CHILD_DB), std::env::var(CHILD_OUT)) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime.block_on(write(Path::new(&db), 2));
    let text = format!(
        "{}\n{}\n{}\n",
        outcome
            .acked
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        outcome
            .refused
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(","),
        outcome.errors.join(" | ").replace('\n', " "),
    );
    std::fs::write(out, text).expect("write the child's outcome");
}

fn parse(line: &str) -> Vec<u64> {
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_write_one_entity_on_one_file() {
    if std::env::var(CHILD_DB).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shared.db");
    let out = dir.path().join("child.out");
    // Create the file before both processes write.
    drop(SqliteEventLog::open(&db).expect("create"));

    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_process_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &db)
        .env(CHILD_OUT, &out)
        .spawn()
        .expect("start the child");
    let mine = write(&db, 1).await;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait for the child");
    assert!(status.success(), "the child failed: {status}");
    let text = std::fs::read_to_string(&out).expect("the child's outcome");
    let mut lines = text.lines();
    let child_acked = parse(lines.next().unwrap_or(""));
    let child_refused = parse(lines.next().unwrap_or(""));
    let child_errors = lines.next().unwrap_or("").to_owned();

    let log = SqliteEventLog::open(&db).expect("open");
    let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
        HANG,
        log.events_by_id("tally", "shared", SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    let values: Vec<u64> = stored.iter().map(|(_, b)| decode(b).0).collect();
    for (i, (seq_no, _)) in stored.iter().enumerate() {
        assert_eq!(seq_no.get(), i as u64 + 1, "gapless seq_nos");
    }
    let unique: HashSet<u64> = values.iter().copied().collect();
    assert_eq!(unique.len(), values.len(), "an event was stored twice");
    for v in mine.acked.iter().chain(&child_acked) {
        assert!(unique.contains(v), "acknowledged event {v} is lost");
    }
    for v in mine.refused.iter().chain(&child_refused) {
        assert!(
            !unique.contains(v),
            "event {v} answered with a conflict was stored"
        );
    }
    assert_eq!(
        values.len(),
        mine.acked.len() + child_acked.len(),
        "stored events that nobody acknowledged"
    );
    assert!(mine.errors.is_empty(), "parent errors: {:?}", mine.errors);
    assert!(child_errors.is_empty(), "child errors: {child_errors}");
    assert!(
        !mine.refused.is_empty() || !child_refused.is_empty(),
        "the processes never raced"
    );

    let entity = spawn(&log).await;
    let state = entity.handle_command(Get).await.expect("get").expect("get");
    assert_eq!(state.count, values.len() as u64);
    assert_eq!(state.sum, values.iter().sum::<u64>());
    eprintln!(
        "parent acked {} refused {}; child acked {} refused {}",
        mine.acked.len(),
        mine.refused.len(),
        child_acked.len(),
        child_refused.len()
    );
}
