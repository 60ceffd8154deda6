//! Entities on two logs (as two processes) write one entity
//! in batches while PostgreSQL terminates the logs' connections again and
//! again; snapshots are on. Acknowledged events are stored exactly once,
//! conflicts wrote nothing, stale entities stop with the conflict, and the
//! respawned entity (from its snapshot) equals a replay of the log.

mod support;

use eventsourced::{
    Command, CommandEffect, EntityRef, EventLog, EventSourced, EventSourcedExt, SeqNo, SerdeJson,
};
use eventsourced_postgres::{PostgresEventLog, PostgresSnapshotStore};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use support::TestDb;
use tokio::time::timeout;

const HANG: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
struct Tally {
    count: u64,
    sum: u64,
}

impl EventSourced for Tally {
    type Id = String;
    type Event = u64;
    const TYPE_NAME: &'static str = "tally";
    fn handle_event(self, n: u64) -> Self {
        Tally {
            count: self.count + 1,
            sum: self.sum + n,
        }
    }
}

struct Add(u64);
impl Command<Tally> for Add {
    type Reply = Tally;
    type Error = std::convert::Infallible;
    fn handle_command(self, _: &String, _: &Tally) -> CommandEffect<Tally, Tally, Self::Error> {
        CommandEffect::emit_and_reply(self.0, |s: &Tally| *s)
    }
}
struct Get;
impl Command<Tally> for Get {
    type Reply = Tally;
    type Error = std::convert::Infallible;
    fn handle_command(self, _: &String, s: &Tally) -> CommandEffect<Tally, Tally, Self::Error> {
        CommandEffect::reply(*s)
    }
}

#[derive(Default)]
struct Seen {
    acked: Vec<u64>,
    refused: Vec<u64>,
    unknown: Vec<u64>,
    wrong: Vec<String>,
}

async fn spawn(log: &PostgresEventLog, store: &PostgresSnapshotStore) -> Option<EntityRef<Tally>> {
    timeout(
        HANG,
        Tally::default().entity().snapshot_every(4).spawn(
            "shared".to_owned(),
            log.clone(),
            store.clone(),
            SerdeJson,
        ),
    )
    .await
    .expect("spawn hung")
    .ok()
}

async fn writer(
    log: PostgresEventLog,
    store: PostgresSnapshotStore,
    tag: u64,
    seen: Arc<Mutex<Seen>>,
) {
    let started = Instant::now();
    let mut n = 0;
    let mut entity = None;
    while started.elapsed() < Duration::from_secs(4) {
        let Some(e) = (match entity.take() {
            Some(e) => Some(e),
            None => spawn(&log, &store).await,
        }) else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // A batch: 5 commands sent at once.
        let sends: Vec<_> = (0..5)
            .map(|_| {
                n += 1;
                let value = tag * 1_000_000 + n;
                let e = e.clone();
                tokio::spawn(
                    async move { (value, timeout(HANG, e.handle_command(Add(value))).await) },
                )
            })
            .collect();
        let mut stopped = false;
        for send in sends {
            let (value, result) = send.await.expect("join");
            let result = result.expect("a command hung");
            let mut seen = seen.lock().unwrap();
            match result {
                Ok(Ok(_)) => seen.acked.push(value),
                Ok(Err(never)) => match never {},
                Err(error) if error.is_conflict() => {
                    seen.refused.push(value);
                    stopped = true;
                }
                Err(_) => {
                    seen.unknown.push(value);
                    stopped = true;
                }
            }
        }
        if stopped {
            let again = timeout(HANG, e.handle_command(Get))
                .await
                .expect("stopped entity hung");
            if again.is_ok() {
                seen.lock()
                    .unwrap()
                    .wrong
                    .push("a stopped entity answered".into());
            }
        } else {
            entity = Some(e);
        }
    }
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
    let seen: Arc<Mutex<Seen>> = Arc::default();

    let a = tokio::spawn(writer(log_a.clone(), store_a.clone(), 1, seen.clone()));
    let b = tokio::spawn(writer(log_b.clone(), store_b.clone(), 2, seen.clone()));
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
    timeout(Duration::from_secs(60), a)
        .await
        .expect("writer a hung")
        .expect("a");
    timeout(Duration::from_secs(60), b)
        .await
        .expect("writer b hung")
        .expect("b");
    let kills = killer.await.expect("killer");

    let log = db.log().await;
    let stored: Vec<(SeqNo, bytes::Bytes)> = timeout(
        HANG,
        log.events_by_id("tally", "shared", SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    let values: Vec<u64> = stored
        .iter()
        .map(|(_, b)| serde_json::from_slice(b).unwrap())
        .collect();
    for (i, (seq_no, _)) in stored.iter().enumerate() {
        assert_eq!(seq_no.get(), i as u64 + 1, "gapless seq_nos");
    }
    let stored_set: HashSet<u64> = values.iter().copied().collect();
    assert_eq!(stored_set.len(), values.len(), "an event stored twice");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "kills {kills}, stored {}, acked {}, refused {}, unknown {}",
        values.len(),
        seen.acked.len(),
        seen.refused.len(),
        seen.unknown.len()
    );
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    for v in &seen.acked {
        assert!(stored_set.contains(v), "acknowledged event {v} lost");
    }
    for v in &seen.refused {
        assert!(
            !stored_set.contains(v),
            "event {v} answered with a conflict was stored"
        );
    }
    let accounted: HashSet<u64> = seen.acked.iter().chain(&seen.unknown).copied().collect();
    for v in &values {
        assert!(
            accounted.contains(v),
            "stored event {v} was neither acknowledged nor failed"
        );
    }
    assert!(!seen.refused.is_empty(), "the two logs never raced");

    // Respawn (snapshot + events) equals the replay.
    let store = PostgresSnapshotStore::from_log(&log);
    let entity = spawn(&log, &store).await.expect("respawn");
    let state = entity.handle_command(Get).await.expect("get").expect("get");
    assert_eq!(state.count, values.len() as u64);
    assert_eq!(state.sum, values.iter().sum::<u64>());
}
