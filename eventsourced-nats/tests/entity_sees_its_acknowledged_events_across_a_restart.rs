//! An entity on NATS (log + KV snapshots) writes batches while
//! its server is killed and restarted; respawned entities then see exactly
//! the acknowledged events (plus only events whose append failed).

mod support;

use bytes::Bytes;
use eventsourced::testkit::{
    counter::{Counter, Get},
    writers::{HANG, Journal, check_stored, write_rounds},
};
use eventsourced::{EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use futures::TryStreamExt;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use support::TestServer;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entity_across_a_server_restart_sees_exactly_its_acknowledged_events() {
    let mut server = TestServer::start(&[]);
    let mut config = NatsConfig::from_url(&server.url());
    config.request_timeout = Duration::from_secs(2);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    config.bucket = format!("counter_snap_{nanos}");
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    log.setup().await.expect("setup");
    let store = NatsSnapshotStore::new(config).await.expect("kv connect");
    store.setup().await.expect("kv setup");
    let id = format!("e{nanos}");
    let spawn = {
        let (log, store, id) = (log.clone(), store.clone(), id.clone());
        move || {
            Counter::default().entity().snapshot_every(3).spawn(
                id.clone(),
                log.clone(),
                store.clone(),
                SerdeJson,
            )
        }
    };

    let journal = Arc::new(Journal::new());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (journal, stop, spawn) = (journal.clone(), stop.clone(), spawn.clone());
        async move { write_rounds(&journal, 1, 5, || !stop.load(Ordering::SeqCst), spawn).await }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    timeout(Duration::from_secs(60), writer)
        .await
        .expect("writer hung")
        .expect("writer");
    // Let buffered publishes of the outage settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let stored: Vec<(SeqNo, Bytes)> = timeout(
        HANG,
        log.events_by_id("counter", &id, SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("read hung")
    .expect("read");
    eprintln!("stored {}, {}", stored.len(), journal.summary());
    let expected = check_stored(&journal, &stored);
    assert!(!journal.failed().is_empty(), "the outage failed no command");
    let entity = spawn().await.expect("respawn");
    let state = entity.handle_command(Get).await.expect("get");
    assert_eq!(state, Ok(expected.0));
}
