//! Writer processes of one entity are killed with `kill -9` again and again,
//! mid-publish, while this process writes the same entity on the same
//! JetStream stream; snapshots (KV) are on. Every acknowledged event (of any
//! process) is stored exactly once, conflicts wrote nothing, and a respawned
//! entity equals a replay of the log.

mod support;

use bytes::Bytes;
use eventsourced::testkit::{
    counter::{Counter, Get},
    writers::{HANG, Journal, check_stored, child_writer, kill_writers, write_rounds},
};
use eventsourced::{EventLog, EventSourcedExt, SeqNo, SerdeJson};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use futures::TryStreamExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::TestServer;
use tokio::time::timeout;

const CHILD_URL: &str = "ZZ_NATS_KILLED_WRITER_URL";
const CHILD_BUCKET: &str = "ZZ_NATS_KILLED_WRITER_BUCKET";
const CHILD_ID: &str = "ZZ_NATS_KILLED_WRITER_ID";
const RUN_FOR: Duration = Duration::from_secs(6);

fn config(url: &str, bucket: &str) -> NatsConfig {
    let mut config = NatsConfig::from_url(url);
    config.bucket = bucket.to_owned();
    config
}

async fn write(
    config: NatsConfig,
    id: &str,
    journal: &Journal,
    tag: u64,
    mut keep_going: impl FnMut() -> bool,
) {
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    let store = NatsSnapshotStore::new(config).await.expect("kv connect");
    let spawn = || {
        Counter::default().entity().snapshot_every(5).spawn(
            id.to_owned(),
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
    let var = |name| std::env::var(name).ok();
    let (Some(url), Some(bucket), Some(id), Some((journal, tag))) = (
        var(CHILD_URL),
        var(CHILD_BUCKET),
        var(CHILD_ID),
        child_writer(),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(write(config(&url, &bucket), &id, &journal, tag, || true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_writer_processes_lose_no_acknowledged_event() {
    let server = TestServer::start(&[]);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let bucket = format!("counter_snap_{nanos}");
    let id = format!("e{nanos}");
    let config = config(&server.url(), &bucket);
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    log.setup().await.expect("setup");
    let store = NatsSnapshotStore::new(config.clone())
        .await
        .expect("kv connect");
    store.setup().await.expect("kv setup");
    let dir = tempfile::tempdir().expect("tempdir");

    let parent = tokio::spawn({
        let (config, id) = (config.clone(), id.clone());
        async move {
            let journal = Journal::new();
            let until = Instant::now() + RUN_FOR;
            write(config, &id, &journal, 1, || Instant::now() < until).await;
            journal
        }
    });
    let children = RUN_FOR - Duration::from_millis(500);
    let url = server.url();
    let env = [
        (CHILD_URL, url.as_str()),
        (CHILD_BUCKET, bucket.as_str()),
        (CHILD_ID, id.as_str()),
    ];
    let killed = kill_writers("child_process_writer", &env, dir.path(), children).await;
    let journal = timeout(Duration::from_secs(60), parent)
        .await
        .expect("the parent's writer hung")
        .expect("the parent's writer");
    journal.merge(&killed.journal);

    let stored: Vec<(SeqNo, Bytes)> = timeout(
        HANG,
        log.events_by_id("counter", &id, SeqNo::new(1))
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
        .spawn(id.clone(), log, store, SerdeJson)
        .await
        .expect("respawn");
    let state = entity.handle_command(Get).await.expect("get");
    assert_eq!(state, Ok(expected.0));
}
