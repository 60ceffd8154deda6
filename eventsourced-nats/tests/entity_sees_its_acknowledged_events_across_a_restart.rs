//! An entity on NATS (log + KV snapshots) writes batches while
//! its server is killed and restarted; respawned entities then see exactly
//! the acknowledged events (plus only events whose append failed).

mod support;

use bytes::Bytes;
use eventsourced::{
    Binarize, BinarizeError, Command, CommandEffect, EntityRef, EventLog, EventSourced,
    EventSourcedExt, SeqNo, SerdeJson,
};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use futures::TryStreamExt;
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use support::TestServer;
use tokio::time::timeout;

const HANG: Duration = Duration::from_secs(30);

#[derive(Debug, Default, Clone, Copy)]
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
#[derive(Debug, Clone, Copy)]
struct Codec;
impl Binarize<u64> for Codec {
    fn encode(&self, v: &u64) -> Result<Bytes, BinarizeError> {
        SerdeJson.encode(v)
    }
    fn decode(&self, b: Bytes) -> Result<u64, BinarizeError> {
        SerdeJson.decode(b)
    }
}
impl Binarize<Tally> for Codec {
    fn encode(&self, v: &Tally) -> Result<Bytes, BinarizeError> {
        SerdeJson.encode(&(v.count, v.sum))
    }
    fn decode(&self, b: Bytes) -> Result<Tally, BinarizeError> {
        let (count, sum): (u64, u64) = SerdeJson.decode(b)?;
        Ok(Tally { count, sum })
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

async fn spawn(
    log: &NatsEventLog,
    store: &NatsSnapshotStore,
    id: &str,
) -> Option<EntityRef<Tally>> {
    timeout(
        HANG,
        Tally::default().entity().snapshot_every(3).spawn(
            id.to_owned(),
            log.clone(),
            store.clone(),
            Codec,
        ),
    )
    .await
    .expect("spawn hung")
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entity_across_a_server_restart_sees_exactly_its_acknowledged_events() {
    let mut server = TestServer::start(&[]);
    let mut config = NatsConfig::from_url(&server.url());
    config.request_timeout = Duration::from_secs(2);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    config.bucket = format!("tally_snap_{nanos}");
    let log = NatsEventLog::new(config.clone()).await.expect("connect");
    log.setup().await.expect("setup");
    let store = NatsSnapshotStore::new(config).await.expect("kv connect");
    store.setup().await.expect("kv setup");
    let id = format!("e{nanos}");

    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (log, store, id, seen, stop) = (
            log.clone(),
            store.clone(),
            id.clone(),
            seen.clone(),
            stop.clone(),
        );
        async move {
            let mut n = 0;
            let mut entity = None;
            while !stop.load(Ordering::SeqCst) {
                let Some(e) = (match entity.take() {
                    Some(e) => Some(e),
                    None => spawn(&log, &store, &id).await,
                }) else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let sends: Vec<_> = (0..5)
                    .map(|_| {
                        n += 1;
                        let e = e.clone();
                        let value = n;
                        tokio::spawn(async move {
                            (value, timeout(HANG, e.handle_command(Add(value))).await)
                        })
                    })
                    .collect();
                let mut stopped = false;
                for send in sends {
                    let (value, result) = send.await.expect("join");
                    let mut seen = seen.lock().unwrap();
                    match result.expect("a command hung") {
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
                    if timeout(HANG, e.handle_command(Get))
                        .await
                        .expect("hung")
                        .is_ok()
                    {
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
        log.events_by_id("tally", &id, SeqNo::new(1)).try_collect(),
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
    let set: HashSet<u64> = values.iter().copied().collect();
    assert_eq!(set.len(), values.len(), "an event stored twice");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "stored {}, acked {}, refused {}, unknown {}",
        values.len(),
        seen.acked.len(),
        seen.refused.len(),
        seen.unknown.len()
    );
    assert!(seen.wrong.is_empty(), "{:?}", seen.wrong);
    for v in &seen.acked {
        assert!(set.contains(v), "acknowledged event {v} lost");
    }
    for v in &seen.refused {
        assert!(
            !set.contains(v),
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
    assert!(!seen.unknown.is_empty(), "the outage failed no command");
    let entity = spawn(&log, &store, &id).await.expect("respawn");
    let state = entity.handle_command(Get).await.expect("get").expect("get");
    assert_eq!(state.count, values.len() as u64);
    assert_eq!(state.sum, values.iter().sum::<u64>());
}
