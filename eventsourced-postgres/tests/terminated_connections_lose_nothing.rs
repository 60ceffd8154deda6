//! PostgreSQL kills this test's connections (`pg_terminate_backend`) three
//! times while 20 entities write: commands in flight get technical errors,
//! nothing hangs, the pool reconnects, respawned and new entities work, and
//! every acknowledged event is in the table exactly once.

mod support;

use eventsourced::{
    Command, CommandEffect, EventLog, EventSourced, EventSourcedExt, HandleCommandError, SeqNo,
    SerdeJson,
};
use eventsourced_postgres::{PostgresEventLog, PostgresSnapshotStore};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, time::Duration};
use support::TestDb;
use tokio::time::timeout;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Tally(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Added {
    Added(u64),
}

impl EventSourced for Tally {
    type Id = String;
    type Event = Added;
    const TYPE_NAME: &'static str = "tally";

    fn handle_event(self, Added::Added(n): Added) -> Self {
        Tally(self.0 + n)
    }
}

#[derive(Debug)]
struct Add(u64);

impl Command<Tally> for Add {
    type Reply = u64;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        _state: &Tally,
    ) -> CommandEffect<Tally, u64, Self::Error> {
        CommandEffect::emit_and_reply(Added::Added(self.0), |state: &Tally| state.0)
    }
}

const ENTITIES: u64 = 20;
const COMMANDS: u64 = 120;
const WAIT: Duration = Duration::from_secs(30);

async fn spawn(
    id: &str,
    log: &PostgresEventLog,
    store: &PostgresSnapshotStore,
) -> eventsourced::EntityRef<Tally> {
    // Spawning may itself meet a killed connection: retry a bounded number of times.
    let mut last_error = None;
    for _ in 0..50 {
        match timeout(
            WAIT,
            Tally::default().entity().snapshot_every(25).spawn(
                id.to_owned(),
                log.clone(),
                store.clone(),
                SerdeJson,
            ),
        )
        .await
        .expect("spawning must not hang")
        {
            Ok(entity) => return entity,
            Err(error) => {
                last_error = Some(error);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("{id} could not be spawned: {last_error:?}");
}

/// Sends COMMANDS commands with unique amounts; returns the acknowledged
/// amounts and how many commands failed technically.
async fn write(
    id: String,
    log: PostgresEventLog,
    store: PostgresSnapshotStore,
    base: u64,
) -> (Vec<u64>, u64) {
    let mut entity = spawn(&id, &log, &store).await;
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for n in 0..COMMANDS {
        let amount = base + n;
        match timeout(WAIT, entity.handle_command(Add(amount)))
            .await
            .expect("a command must not hang while connections are killed")
        {
            Ok(Ok(_)) => acknowledged.push(amount),
            Ok(Err(never)) => match never {},
            Err(error) => {
                assert!(
                    !error.is_conflict(),
                    "a killed connection must give a technical error, not a conflict: {error}"
                );
                assert!(
                    matches!(error, HandleCommandError::AppendFailed { .. }),
                    "{error}"
                );
                failed += 1;
                entity = spawn(&id, &log, &store).await;
            }
        }
    }
    (acknowledged, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_connections_lose_and_duplicate_no_acknowledged_event() {
    let db = TestDb::new();
    let log = db.log().await;
    let store = PostgresSnapshotStore::from_log(&log);
    store.setup().await.expect("snapshot setup");
    let raw = db.raw().await;
    let application_name = db.config.application_name.clone();

    let writers: Vec<_> = (0..ENTITIES)
        .map(|e| {
            tokio::spawn(write(
                format!("e{e}"),
                log.clone(),
                store.clone(),
                e * 1_000_000,
            ))
        })
        .collect();
    let mut killed_total = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let killed: i64 = raw
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&application_name],
            )
            .await
            .expect("terminate this test's connections")
            .get(0);
        killed_total += killed;
    }
    assert!(killed_total > 0, "the test must have killed connections");

    let mut acknowledged: HashMap<String, Vec<u64>> = HashMap::new();
    let mut failures = 0;
    for (e, writer) in (0..ENTITIES).zip(writers) {
        let (acked, failed) = timeout(Duration::from_secs(120), writer)
            .await
            .expect("writers must finish")
            .expect("writer must not panic");
        failures += failed;
        acknowledged.insert(format!("e{e}"), acked);
    }
    println!("killed {killed_total} connections; {failures} commands failed technically");

    for (id, acked) in &acknowledged {
        let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
            WAIT,
            log.events_by_id(Tally::TYPE_NAME, id, SeqNo::new(1))
                .try_collect(),
        )
        .await
        .expect("reading must not hang")
        .expect("reading after the kills must work");
        let mut count: HashMap<u64, usize> = HashMap::new();
        for ((seq_no, bytes), n) in stored.iter().zip(1..) {
            assert_eq!(seq_no.get(), n, "{id}: seq_nos must be gapless");
            let Added::Added(amount) = serde_json::from_slice(bytes).expect("event decodes");
            *count.entry(amount).or_default() += 1;
        }
        assert!(
            count.values().all(|&c| c == 1),
            "{id}: no event may be stored twice"
        );
        for amount in acked {
            assert_eq!(
                count.get(amount),
                Some(&1),
                "{id}: acknowledged event {amount} must be stored exactly once"
            );
        }
    }

    // The pool has reconnected: a new entity works.
    let fresh = spawn("fresh", &log, &store).await;
    for n in 1..=5 {
        let reply = timeout(WAIT, fresh.handle_command(Add(1)))
            .await
            .expect("must not hang")
            .expect("a new entity works after the kills");
        assert_eq!(reply, Ok(n));
    }
}
