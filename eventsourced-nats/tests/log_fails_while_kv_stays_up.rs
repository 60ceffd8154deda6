//! The NATS event log fails (its stream deleted, full, sealed, re-subjected,
//! unacknowledged) while the server and the KV snapshot bucket stay up.
//!
//! What must hold (DESIGN.md, "Entity runtime" and "Bad input and faults"):
//! every command of the failing batch gets a typed technical error naming the
//! cause, the entity stops, later sends on any clone return that cause (not
//! "channel closed"), nothing acknowledged is lost, the snapshot store keeps
//! working, and no reader hangs silently.
//!
//! Findings: appends fail with a readable backend error in every case (the
//! entity stops, clones return the same cause, nothing acknowledged is lost,
//! no snapshot gets ahead of what was acknowledged); spawning on a deleted
//! stream and `events_by_id` there are readable errors. The live
//! `events_by_type` reader is defective: it hangs silently while its stream
//! is deleted and skips events once `setup()` recreates it (the last two
//! tests, which fail now; see their docs for cause and fix).

mod support;

use async_nats::jetstream::{self, stream::DiscardPolicy};
use bytes::Bytes;
use eventsourced::{
    Binarize, BinarizeError, Command, CommandEffect, EntityRef, EventEnvelope, EventLog,
    EventLogError, EventSourced, EventSourcedExt, HandleCommandError, Position, SeqNo, SerdeJson,
    SnapshotStore, SpawnError,
};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use futures::{StreamExt, TryStreamExt};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::time::timeout;

/// Anything slower than this is a hang.
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

/// A log and a snapshot store of their own (stream, prefix, bucket) on the
/// shared test server, plus a JetStream context to play the operator.
struct Fixture {
    log: NatsEventLog,
    store: NatsSnapshotStore,
    operator: jetstream::Context,
    stream: String,
    id: String,
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos}x{}", N.fetch_add(1, Ordering::SeqCst))
}

fn config() -> NatsConfig {
    let u = unique();
    let mut config = NatsConfig::from_url(&support::nats_url());
    config.request_timeout = Duration::from_secs(2);
    config.stream = format!("lf_{u}");
    config.subject_prefix = format!("lf{u}.ev");
    config.bucket = format!("lf_snap_{u}");
    config
}

async fn fixture_with(log_config: NatsConfig) -> Fixture {
    let log = NatsEventLog::new(log_config.clone())
        .await
        .expect("connect");
    log.setup().await.expect("setup");
    // The bucket never gets the log's limits: only the log fails here.
    let mut store_config = log_config.clone();
    store_config.max_bytes = None;
    let store = NatsSnapshotStore::new(store_config)
        .await
        .expect("kv connect");
    store.setup().await.expect("kv setup");
    let client = async_nats::connect(support::nats_url())
        .await
        .expect("operator connect");
    Fixture {
        log,
        store,
        operator: jetstream::new(client),
        stream: log_config.stream,
        id: format!("e{}", unique()),
    }
}

async fn fixture() -> Fixture {
    fixture_with(config()).await
}

impl Fixture {
    async fn spawn(&self) -> Result<EntityRef<Tally>, SpawnError> {
        timeout(
            HANG,
            Tally::default().entity().snapshot_every(3).spawn(
                self.id.clone(),
                self.log.clone(),
                self.store.clone(),
                Codec,
            ),
        )
        .await
        .expect("spawn hung")
    }

    async fn delete_stream(&self) {
        self.operator
            .delete_stream(&self.stream)
            .await
            .expect("the operator deletes the stream");
    }

    /// Changes the stream's config as an operator would.
    async fn update_stream(&self, change: impl FnOnce(&mut jetstream::stream::Config)) {
        let mut stream = self
            .operator
            .get_stream(&self.stream)
            .await
            .expect("stream");
        let mut config = stream.info().await.expect("stream info").config.clone();
        change(&mut config);
        self.operator
            .update_stream(config)
            .await
            .expect("the operator updates the stream");
    }

    /// Waits until the snapshot store holds a snapshot at `seq_no` or later.
    async fn snapshot_at_least(&self, seq_no: u64) -> (SeqNo, Bytes) {
        let deadline = Instant::now() + HANG;
        loop {
            let loaded = self
                .store
                .load(Tally::TYPE_NAME, &self.id)
                .await
                .expect("the snapshot store works");
            if let Some((s, bytes)) = loaded
                && s.get() >= seq_no
            {
                return (s, bytes);
            }
            assert!(Instant::now() < deadline, "no snapshot at {seq_no}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns the entity and has `values` acknowledged one by one.
    async fn spawn_with(
        &self,
        values: impl IntoIterator<Item = u64>,
        acked: &str,
    ) -> EntityRef<Tally> {
        let entity = self.spawn().await.expect("spawn");
        for n in values {
            send(&entity, n).await.expect(acked);
        }
        entity
    }

    /// Like `spawn_with`, then waits for a snapshot at seq_no 3 or later.
    async fn spawn_with_snapshot(
        &self,
        values: impl IntoIterator<Item = u64>,
        acked: &str,
    ) -> EntityRef<Tally> {
        let entity = self.spawn_with(values, acked).await;
        self.snapshot_at_least(3).await;
        entity
    }

    /// Spawns the entity, has event 1 acknowledged, then changes the
    /// stream's config as an operator would.
    async fn spawn_one_then_update(
        &self,
        change: impl FnOnce(&mut jetstream::stream::Config),
    ) -> EntityRef<Tally> {
        let entity = self.spawn_with([1], "acked").await;
        self.update_stream(change).await;
        entity
    }

    /// Spawns the entity again and returns its state.
    async fn respawned_state(&self, what: &str) -> Tally {
        let again = self.spawn().await.expect(what);
        timeout(HANG, again.handle_command(Get))
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }

    /// Deletes the stream, then has `setup()` create it again.
    async fn recreate_stream(&self) {
        self.delete_stream().await;
        self.log.setup().await.expect("setup recreates the stream");
    }

    /// The entity has no events: none to read, `last_seq_no` is zero.
    async fn assert_no_events(&self, why: &str) {
        assert!(self.stored(&self.id).await.is_empty(), "{why}");
        assert_eq!(
            self.log
                .last_seq_no(Tally::TYPE_NAME, &self.id)
                .await
                .unwrap(),
            SeqNo::ZERO
        );
    }

    async fn stored(&self, id: &str) -> Vec<u64> {
        let events: Vec<(SeqNo, Bytes)> = timeout(
            HANG,
            self.log
                .events_by_id(Tally::TYPE_NAME, id, SeqNo::new(1))
                .try_collect(),
        )
        .await
        .expect("read hung")
        .expect("read");
        events
            .iter()
            .map(|(_, b)| serde_json::from_slice(b).unwrap())
            .collect()
    }
}

async fn send(entity: &EntityRef<Tally>, n: u64) -> Result<Tally, HandleCommandError> {
    timeout(HANG, entity.handle_command(Add(n)))
        .await
        .expect("a command hung")
        .map(|reply| match reply {
            Ok(state) => state,
            Err(never) => match never {},
        })
}

/// Sends `values` at once on clones of `entity`, so that they form one batch.
async fn send_all(
    entity: &EntityRef<Tally>,
    values: impl IntoIterator<Item = u64>,
) -> Vec<Result<Tally, HandleCommandError>> {
    let sends: Vec<_> = values
        .into_iter()
        .map(|n| {
            let e = entity.clone();
            tokio::spawn(async move { send(&e, n).await })
        })
        .collect();
    let mut results = Vec::new();
    for send in sends {
        results.push(send.await.expect("a send panicked"));
    }
    results
}

/// The result must be a failed append that is not a conflict and whose
/// message contains every one of `needles` (case-insensitive); returns the
/// message.
fn append_failed<T: std::fmt::Debug>(
    result: &Result<T, HandleCommandError>,
    needles: &[&str],
) -> String {
    let error = match result {
        Err(error @ HandleCommandError::AppendFailed { .. }) => error,
        other => panic!("expected a failed append, got {other:?}"),
    };
    let cause = error.append_error().expect("an append error");
    assert!(
        matches!(cause, EventLogError::Backend { .. }),
        "expected a backend error naming the cause, got {cause:?}"
    );
    let text = error.to_string();
    for needle in needles {
        assert!(
            text.to_lowercase().contains(&needle.to_lowercase()),
            "the error does not name {needle:?}: {text}"
        );
    }
    text
}

/// Every result of one failed batch is a failed append naming all of
/// `needles`, all with the same cause, and the entity stays stopped with
/// it; returns the cause.
async fn failed_and_stopped<T: std::fmt::Debug>(
    entity: &EntityRef<Tally>,
    results: &[Result<T, HandleCommandError>],
    needles: &[&str],
    what: &str,
) -> String {
    let first = append_failed(&results[0], needles);
    eprintln!("{what}: {first}");
    for result in results {
        let text = append_failed(result, &[]);
        assert_eq!(text, first, "the commands of one failure got other causes");
    }
    stays_stopped_with(entity, &first).await;
    first
}

/// Sends `values` as one batch, which must fail as `failed_and_stopped`
/// says; returns the cause.
async fn batch_fails_and_stops(
    entity: &EntityRef<Tally>,
    values: impl IntoIterator<Item = u64>,
    needles: &[&str],
    what: &str,
) -> String {
    let results = send_all(entity, values).await;
    failed_and_stopped(entity, &results, needles, what).await
}

/// Every later send on every clone returns the same cause.
async fn stays_stopped_with(entity: &EntityRef<Tally>, cause: &str) {
    for e in [entity.clone(), entity.clone()] {
        let later = send(&e, 1000).await;
        let text = match &later {
            Err(error @ HandleCommandError::AppendFailed { .. }) => error.to_string(),
            other => panic!("a later send should return the cause, got {other:?}"),
        };
        assert_eq!(text, cause, "a later send returned another cause");
        let get = timeout(HANG, e.handle_command(Get)).await.expect("hung");
        assert!(get.is_err(), "a stopped entity answered: {get:?}");
        assert!(e.stopped().is_some(), "the entity still claims to run");
    }
}

// ---------------------------------------------------------------------------
// 1. The stream is deleted under a running entity.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_stream_fails_the_whole_batch_readably_and_stops_the_entity() {
    let f = fixture().await;
    let entity = f
        .spawn_with_snapshot(1..=4, "acked before the deletion")
        .await;
    f.delete_stream().await;

    batch_fails_and_stops(
        &entity,
        10..15,
        &["no JetStream stream stores subject", "setup"],
        "deleted stream, command error",
    )
    .await;

    // The bucket keeps working and still holds the acknowledged state.
    let (seq_no, bytes) = f.snapshot_at_least(3).await;
    assert!(
        seq_no.get() <= 4,
        "a snapshot beyond the acknowledged events"
    );
    let state: Tally = Codec.decode(bytes).unwrap();
    assert_eq!(state.count, seq_no.get());
    f.store
        .save("other", "x", SeqNo::new(1), Bytes::from_static(b"[1,1]"))
        .await
        .expect("the snapshot store saves while the log is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spawning_after_the_stream_is_deleted_is_a_readable_read_error() {
    let f = fixture().await;
    let entity = f.spawn_with_snapshot(1..=3, "acked").await;
    drop(entity);
    f.delete_stream().await;

    let error = f.spawn().await.expect_err("no log, no entity");
    let text = error.to_string();
    eprintln!("spawn on a deleted stream: {text}");
    assert!(
        matches!(error, SpawnError::ReadEvents { .. }),
        "expected a read error, got {error:?}"
    );
    for needle in [f.stream.as_str(), "NatsEventLog::setup", "stream not found"] {
        assert!(
            text.contains(needle),
            "the error does not name {needle:?}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_setup_recreates_a_deleted_stream_nothing_is_written_past_a_missing_history() {
    let f = fixture().await;
    let entity = f.spawn_with_snapshot(1..=4, "acked").await;
    f.recreate_stream().await;

    // The entity that ran across the deletion: its next append must not
    // write seq_no 5 onto a subject that now holds nothing.
    let result = send(&entity, 5).await;
    let error = result.expect_err("an append on top of a history that is gone");
    eprintln!("running entity after the recreation: {error}");
    assert!(
        matches!(error, HandleCommandError::AppendFailed { .. }),
        "{error:?}"
    );
    f.assert_no_events("written past a gap").await;

    // A respawn sees the snapshot ahead of the (recreated) log: typed.
    let error = f
        .spawn()
        .await
        .expect_err("the snapshot is ahead of the log");
    eprintln!("respawn after the recreation: {error}");
    assert!(
        matches!(
            error,
            SpawnError::SnapshotAheadOfLog { snapshot_seq_no, log_seq_no, .. }
                if snapshot_seq_no.get() >= 3 && log_seq_no == SeqNo::ZERO
        ),
        "{error:?}"
    );
    // The snapshot store is untouched by all this.
    f.snapshot_at_least(3).await;
}

// ---------------------------------------------------------------------------
// 2. The stream reaches a limit (discard new: publishes are refused).

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_at_max_msgs_refuses_the_batch_readably_and_loses_nothing() {
    let f = fixture().await;
    f.update_stream(|c| {
        c.max_messages = 3;
        c.discard = DiscardPolicy::New;
    })
    .await;
    let entity = f
        .spawn_with_snapshot(1..=3, "room for three messages")
        .await;

    batch_fails_and_stops(
        &entity,
        10..15,
        &["maximum messages", "subject"],
        "max_msgs",
    )
    .await;

    assert_eq!(f.stored(&f.id).await, vec![1, 2, 3], "acknowledged events");
    let (seq_no, _) = f.snapshot_at_least(3).await;
    assert_eq!(seq_no, SeqNo::new(3), "a snapshot of a refused append");
    let state = f.respawned_state("respawn from snapshot + log").await;
    assert_eq!((state.count, state.sum), (3, 6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_at_max_bytes_from_the_config_refuses_the_append_readably() {
    let mut config = config();
    config.max_bytes = Some(400);
    let f = fixture_with(config).await;
    let entity = f.spawn().await.expect("spawn");
    let mut acked = Vec::new();
    let error = loop {
        let n = acked.len() as u64 + 1;
        match send(&entity, n).await {
            Ok(_) => acked.push(n),
            Err(error) => break Err::<(), _>(error),
        }
        assert!(acked.len() < 100, "max-bytes never refused an append");
    };
    failed_and_stopped(
        &entity,
        &[error],
        &["maximum bytes", "subject"],
        &format!("max_bytes after {} appends", acked.len()),
    )
    .await;
    assert_eq!(f.stored(&f.id).await, acked, "acknowledged events");
    let state = f.respawned_state("respawn").await;
    assert_eq!(state.count, acked.len() as u64);
}

// ---------------------------------------------------------------------------
// 3. The stream is sealed, re-subjected, or stops acknowledging.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealed_stream_refuses_the_append_readably() {
    let f = fixture().await;
    let entity = f.spawn_one_then_update(|c| c.sealed = true).await;

    batch_fails_and_stops(&entity, 10..13, &["sealed", "subject"], "sealed").await;
    assert_eq!(f.stored(&f.id).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_whose_subjects_changed_refuses_the_append_readably() {
    let f = fixture().await;
    let elsewhere = format!("elsewhere{}.>", unique());
    let entity = f
        .spawn_one_then_update(|c| c.subjects = vec![elsewhere])
        .await;

    batch_fails_and_stops(
        &entity,
        10..13,
        &["no JetStream stream stores subject", "setup"],
        "subjects changed",
    )
    .await;
    // Reading the old message still works: it is in the stream.
    assert_eq!(f.stored(&f.id).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_without_acks_times_out_and_a_respawn_sees_the_unacknowledged_event() {
    let f = fixture().await;
    let entity = f.spawn_one_then_update(|c| c.no_ack = true).await;

    let started = Instant::now();
    let result = send(&entity, 2).await;
    failed_and_stopped(
        &entity,
        &[result],
        &["no acknowledgement", "may or may not be stored"],
        &format!("no_ack after {:?}", started.elapsed()),
    )
    .await;
    // Event 1 (acknowledged) is kept; event 2 (failed) may be there too.
    let stored = f.stored(&f.id).await;
    assert!(stored == vec![1] || stored == vec![1, 2], "{stored:?}");
    let state = f.respawned_state("respawn").await;
    assert_eq!(state.count, stored.len() as u64);
}

// ---------------------------------------------------------------------------
// 4. Readers without a projection while the stream is deleted.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_by_id_on_a_deleted_stream_is_a_readable_error_and_empty_after_setup() {
    let f = fixture().await;
    for n in 1..=3 {
        append_one(&f, &f.id, n).await;
    }
    f.delete_stream().await;
    let read: Result<Vec<_>, _> = timeout(
        HANG,
        f.log
            .events_by_id(Tally::TYPE_NAME, &f.id, SeqNo::new(1))
            .try_collect(),
    )
    .await
    .expect("events_by_id hung on a deleted stream");
    let error = read.expect_err("no stream, no events");
    let text = error.to_string();
    eprintln!("events_by_id on a deleted stream: {text}");
    assert!(matches!(error, EventLogError::Backend { .. }), "{error:?}");
    for needle in [f.stream.as_str(), "NatsEventLog::setup"] {
        assert!(text.contains(needle), "does not name {needle:?}: {text}");
    }
    let last = f.log.last_seq_no(Tally::TYPE_NAME, &f.id).await;
    assert!(last.is_err(), "last_seq_no of a deleted stream: {last:?}");

    f.log.setup().await.expect("setup recreates the stream");
    f.assert_no_events("events after the recreation").await;
}

/// Reads `stream` on a task of its own, forwarding every item.
fn forward(
    stream: impl futures::Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<EventEnvelope, EventLogError>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

async fn append_one(f: &Fixture, id: &str, seq_no: u64) {
    timeout(
        HANG,
        f.log.append(
            Tally::TYPE_NAME,
            id,
            SeqNo::new(seq_no - 1),
            &[Bytes::from(seq_no.to_string())],
        ),
    )
    .await
    .expect("append hung")
    .expect("append");
}

/// A live `events_by_type` reader that has received three appended events.
async fn live_after_three_events(
    f: &Fixture,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<EventEnvelope, EventLogError>> {
    let mut live = forward(f.log.events_by_type(Tally::TYPE_NAME, Position::START));
    for n in 1..=3 {
        append_one(f, &f.id, n).await;
    }
    for _ in 0..3 {
        timeout(HANG, live.recv())
            .await
            .expect("live catch-up hung")
            .expect("the live stream ended")
            .expect("an event");
    }
    live
}

/// A live reader whose stream is deleted ends with an error that says so.
/// (It used to wait forever: async-nats recreates the ordered consumer of a
/// deleted stream again and again, and never yields an error; the reader
/// now asks whether its stream is still there after a few idle seconds.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_events_by_type_ends_with_an_error_when_its_stream_is_deleted() {
    let f = fixture().await;
    let mut live = live_after_three_events(&f).await;
    f.delete_stream().await;

    // Within HANG the reader must say that its stream is gone.
    match timeout(HANG, live.recv()).await {
        Ok(Some(Err(error))) => {
            eprintln!("live stream after the deletion: {error}");
            let text = error.to_string();
            assert!(text.contains("was deleted"), "{text}");
            assert!(text.contains(&f.stream), "{text}");
        }
        Ok(None) => panic!("the live stream ended without an error"),
        Ok(Some(Ok(event))) => panic!("an event from a deleted stream: {event:?}"),
        Err(_) => panic!(
            "the live stream of a deleted stream hung silently for {HANG:?}: \
             no error, no end (async-nats recreates the ordered consumer forever)"
        ),
    }
}

/// A live reader that ran across a delete + `setup()` reports the new
/// stream instead of reading on. (It used to skip the new stream's first
/// events without a word: async-nats recreates its consumer after the last
/// stream sequence it saw, which on the new stream is a later message. The
/// reader now checks the stream's creation time whenever its consumer was
/// replaced.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_events_by_type_never_skips_events_after_its_stream_is_recreated() {
    let f = fixture().await;
    let mut live = live_after_three_events(&f).await;
    f.delete_stream().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.log.setup().await.expect("setup recreates the stream");
    let other = format!("n{}", unique());
    for n in 1..=5 {
        append_one(&f, &other, n).await;
    }

    // Either the reader reports the loss of its stream, or it delivers every
    // event of the new stream; it must not go on after a silent gap.
    let mut delivered = Vec::new();
    let mut reported = None;
    let deadline = Instant::now() + HANG;
    while delivered.len() < 5 {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, live.recv()).await {
            Ok(Some(Err(error))) => {
                reported = Some(error.to_string());
                break;
            }
            Ok(Some(Ok(event))) => delivered.push((event.id.clone(), event.seq_no.get())),
            Ok(None) => panic!("the live stream ended without an error"),
            Err(_) => break,
        }
    }
    eprintln!("after the recreation: delivered {delivered:?}, error {reported:?}");
    let seq_nos: Vec<u64> = delivered.iter().map(|(_, s)| *s).collect();
    let prefix: Vec<u64> = (1..=seq_nos.len() as u64).collect();
    assert_eq!(
        seq_nos, prefix,
        "the live stream silently skipped events of the recreated stream: \
         delivered seq_nos {seq_nos:?} of entity {other} (1..=5 were appended)"
    );
    if let Some(reported) = &reported {
        assert!(reported.contains("created again"), "{reported}");
    }
    assert!(
        reported.is_some() || seq_nos.len() == 5,
        "the live stream neither reported its deleted stream nor delivered \
         the new events within {HANG:?}: delivered {seq_nos:?}"
    );
}

/// A reader that resumes from a position of a stream that was deleted and
/// created again, beyond the new stream's end, is refused: it would wait for
/// the new stream to reach that position and skip everything before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resuming_beyond_the_end_of_a_recreated_stream_is_refused() {
    let f = fixture().await;
    for n in 1..=3 {
        append_one(&f, &f.id, n).await;
    }
    let mut all = Box::pin(f.log.events_by_type(Tally::TYPE_NAME, Position::START));
    let mut last = Position::START;
    for _ in 0..3 {
        last = timeout(HANG, all.next())
            .await
            .expect("catch-up hung")
            .expect("the live stream ended")
            .expect("an event")
            .position;
    }
    drop(all);
    // Resuming after the last event is fine on the same stream.
    let mut same = Box::pin(f.log.events_by_type(Tally::TYPE_NAME, last.next()));
    let nothing = timeout(Duration::from_millis(300), same.next()).await;
    assert!(
        nothing.is_err(),
        "resuming after the end yielded {nothing:?}"
    );
    drop(same);

    f.recreate_stream().await;
    append_one(&f, &format!("n{}", unique()), 1).await;
    let mut resumed = Box::pin(f.log.events_by_type(Tally::TYPE_NAME, last.next()));
    match timeout(HANG, resumed.next()).await {
        Ok(Some(Err(error))) => {
            let text = error.to_string();
            assert!(text.contains("beyond the end of stream"), "{text}");
        }
        other => panic!("resuming beyond the end of a new stream gave {other:?}"),
    }
}
