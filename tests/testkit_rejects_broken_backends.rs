//! The conformance suites reject broken backends: each test wraps the
//! in-memory log or store so that it breaks one MUST of the contract (the
//! reference crate's defect of ignoring the expected seq_no, a live
//! stream that goes silent, the sequence-gap bug, an event lost at a page
//! boundary, empty events dropped, ids that collide after escaping, ids
//! mangled only live, snapshot keys that let two entities collide, an older concurrent
//! save winning), shows directly that it is broken, and then that
//! `testkit::check_event_log` or `check_snapshot_store` fails it.

use bytes::Bytes;
use eventsourced::{
    Binarize, EventEnvelope, EventLog, EventLogError, MemoryEventLog, MemorySnapshotStore,
    Position, Prost, SeqNo, SnapshotStore, SnapshotStoreError, testkit,
};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt, stream};
use std::{
    collections::{BTreeMap, HashMap},
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, time::timeout};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Runs the event log suite; `true` if it passed (did not panic).
async fn suite_passes<L: EventLog>(log: L) -> bool {
    AssertUnwindSafe(testkit::check_event_log(log))
        .catch_unwind()
        .await
        .is_ok()
}

async fn snapshot_suite_passes<S: SnapshotStore>(store: S) -> bool {
    AssertUnwindSafe(testkit::check_snapshot_store(store))
        .catch_unwind()
        .await
        .is_ok()
}

/// A live consumer follows `type_name` from START while `writers` tasks append
/// `per_writer` single-event appends each to their own entity, concurrently.
/// Returns the envelopes the consumer saw within `wait` (it stops early once
/// it has them all).
async fn follow_while_appending<L: EventLog>(
    log: &L,
    type_name: &str,
    writers: usize,
    per_writer: usize,
    wait: Duration,
) -> Vec<EventEnvelope> {
    let total = writers * per_writer;
    let mut live = Box::pin(log.events_by_type(type_name, Position::START));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (log, type_name) = (log.clone(), type_name.to_owned());
            tokio::spawn(async move {
                for n in 0..per_writer {
                    log.append(
                        &type_name,
                        &format!("w{w}"),
                        SeqNo::new(n as u64),
                        &[Bytes::from(format!("{w}/{n}"))],
                    )
                    .await
                    .expect("append");
                    if n % 3 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while seen.len() < total {
        match tokio::time::timeout_at(deadline, live.next()).await {
            Ok(Some(Ok(e))) => seen.push(e),
            Ok(Some(Err(e))) => panic!("live stream failed: {e}"),
            Ok(None) => break,
            Err(_) => break,
        }
    }
    for t in tasks {
        t.await.expect("writer");
    }
    seen
}

/// Every entity's events exactly once and in seq_no order, positions increasing.
fn is_complete_and_ordered(seen: &[EventEnvelope], writers: usize, per_writer: usize) -> bool {
    if seen.len() != writers * per_writer {
        return false;
    }
    if !seen.windows(2).all(|w| w[0].position < w[1].position) {
        return false;
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    seen.iter().all(|e| {
        let l = last.entry(&e.id).or_default();
        *l += 1;
        e.seq_no.get() == *l
    })
}

// ---------------------------------------------------------------------------
// Broken log 1: the live stream goes silent after its first live event
// (e.g. a LISTEN / subscription that is never re-armed).
// ---------------------------------------------------------------------------

/// Wraps a MemoryEventLog; appends are serialized so the wrapper knows the
/// positions the inner log assigns (1, 2, 3, ... across all types).
#[derive(Clone, Default)]
struct Tracked {
    inner: MemoryEventLog,
    write: Arc<tokio::sync::Mutex<u64>>,
    /// type name -> positions of its events.
    positions: Arc<Mutex<HashMap<String, Vec<Position>>>>,
}

impl Tracked {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        let mut last_position = self.write.lock().await;
        let result = self.inner.append(type_name, id, expected, events).await?;
        let mut positions = self.positions.lock().unwrap();
        let list = positions.entry(type_name.to_owned()).or_default();
        for _ in events {
            *last_position += 1;
            list.push(Position::new(*last_position));
        }
        Ok(result)
    }

    /// How many events of `type_name` a stream from `from` would catch up on now.
    fn catch_up_len(&self, type_name: &str, from: Position) -> usize {
        self.positions
            .lock()
            .unwrap()
            .get(type_name)
            .map_or(0, |ps| ps.iter().filter(|p| **p >= from).count())
    }
}

macro_rules! delegate_reads {
    () => {
        async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
            self.t.inner.last_seq_no(type_name, id).await
        }
        fn events_by_id(
            &self,
            type_name: &str,
            id: &str,
            from: SeqNo,
        ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
            self.t.inner.events_by_id(type_name, id, from)
        }
    };
}

#[derive(Clone, Default)]
struct SilentAfterFirstLiveEvent {
    t: Tracked,
}

impl EventLog for SilentAfterFirstLiveEvent {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.t.append(type_name, id, expected, events).await
    }
    delegate_reads!();
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let allowed = self.t.catch_up_len(type_name, from) + 1;
        self.t
            .inner
            .events_by_type(type_name, from)
            .take(allowed)
            .chain(stream::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_live_stream_that_goes_silent_after_one_live_event() {
    let log = SilentAfterFirstLiveEvent::default();
    // It really is broken: a follower misses every live event after the first.
    let seen = follow_while_appending(&log, "silent", 2, 20, Duration::from_secs(2)).await;
    assert!(
        !is_complete_and_ordered(&seen, 2, 20),
        "sanity: the broken log must lose live events (saw {})",
        seen.len()
    );
    assert!(
        !suite_passes(SilentAfterFirstLiveEvent::default()).await,
        "the suite must reject a log whose live events_by_type stops \
         delivering after its first live event"
    );
}

// ---------------------------------------------------------------------------
// Broken log 2: the classic Postgres sequence-gap bug. A position is taken
// when the write starts; the write becomes visible later; a follower that has
// seen a higher position skips the lower one that commits after it.
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct CommitsOutOfOrder {
    inner: MemoryEventLog,
    next_position: Arc<tokio::sync::Mutex<u64>>,
    visible: Arc<Mutex<HashMap<String, BTreeMap<u64, EventEnvelope>>>>,
    head: Arc<watch::Sender<u64>>,
}

impl Default for CommitsOutOfOrder {
    fn default() -> Self {
        CommitsOutOfOrder {
            inner: MemoryEventLog::default(),
            next_position: Arc::default(),
            visible: Arc::default(),
            head: Arc::new(watch::channel(0).0),
        }
    }
}

impl EventLog for CommitsOutOfOrder {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        // "INSERT ... nextval()": conflict check and positions, under a lock.
        let first = {
            let mut next = self.next_position.lock().await;
            self.inner.append(type_name, id, expected, events).await?;
            let first = *next + 1;
            *next += events.len() as u64;
            first
        };
        if events.is_empty() {
            return Ok(expected);
        }
        // "COMMIT": some transactions take longer.
        if first % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        {
            let mut visible = self.visible.lock().unwrap();
            let of_type = visible.entry(type_name.to_owned()).or_default();
            for (k, e) in events.iter().enumerate() {
                of_type.insert(
                    first + k as u64,
                    EventEnvelope {
                        position: Position::new(first + k as u64),
                        id: id.to_owned(),
                        seq_no: SeqNo::new(expected.get() + 1 + k as u64),
                        event: e.clone(),
                    },
                );
            }
        }
        self.head.send_modify(|h| *h += 1);
        Ok(expected.add(events.len() as u64))
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.inner.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.inner.events_by_id(type_name, id, from)
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let state = (
            self.visible.clone(),
            self.head.subscribe(),
            type_name.to_owned(),
            from,
            Vec::<EventEnvelope>::new(),
        );
        stream::unfold(
            state,
            |(visible, mut head, type_name, mut next, mut buf)| async move {
                loop {
                    if !buf.is_empty() {
                        let e = buf.remove(0);
                        next = e.position.next();
                        return Some((Ok(e), (visible, head, type_name, next, buf)));
                    }
                    head.borrow_and_update();
                    buf = visible
                        .lock()
                        .unwrap()
                        .get(&type_name)
                        .map(|m| m.range(next.get()..).map(|(_, e)| e.clone()).collect())
                        .unwrap_or_default();
                    if buf.is_empty() {
                        head.changed().await.ok()?;
                    }
                }
            },
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_skips_events_committed_out_of_order() {
    let log = CommitsOutOfOrder::default();
    let seen = follow_while_appending(&log, "gap", 4, 25, Duration::from_secs(3)).await;
    assert!(
        !is_complete_and_ordered(&seen, 4, 25),
        "sanity: the broken log must skip late-committed events (saw {} of 100)",
        seen.len()
    );
    assert!(
        !suite_passes(CommitsOutOfOrder::default()).await,
        "the suite must reject a log with the sequence-gap bug \
         (a live follower skips an event that commits after a higher-positioned one)"
    );
}

// ---------------------------------------------------------------------------
// Broken log 3: catch-up loses one event at a page boundary (the first event
// of the second page of 1024). The suite never reads more than ~950 events.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct PageBoundaryLoss(MemoryEventLog);

impl EventLog for PageBoundaryLoss {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.0.append(type_name, id, expected, events).await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.0.events_by_id(type_name, id, from)
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        self.0
            .events_by_type(type_name, from)
            .enumerate()
            .filter(|(i, _)| std::future::ready(*i != 1024))
            .map(|(_, e)| e)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_loses_an_event_at_a_page_boundary() {
    let log = PageBoundaryLoss::default();
    let events: Vec<Bytes> = (0..2000).map(|n| Bytes::from(n.to_string())).collect();
    log.append("pages", "a", SeqNo::ZERO, &events)
        .await
        .unwrap();
    let seqs: Vec<u64> = log
        .events_by_type("pages", Position::START)
        .take(1999)
        .map_ok(|e| e.seq_no.get())
        .try_collect()
        .await
        .unwrap();
    assert!(
        seqs.windows(2).any(|w| w[1] != w[0] + 1),
        "sanity: the broken log must skip an event"
    );
    assert!(
        !suite_passes(PageBoundaryLoss::default()).await,
        "the suite must reject a log that drops the 1025th event of a \
         catch-up (no check reads more than one page of events)"
    );
}

// ---------------------------------------------------------------------------
// Broken log 4: zero-length events vanish. Prost encodes a default-valued
// message to zero bytes, so these are real events.
// ---------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct Reset {
    #[prost(uint64, tag = "1")]
    to: u64,
}

#[derive(Clone, Default)]
struct DropsEmptyEvents(MemoryEventLog);

impl EventLog for DropsEmptyEvents {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.0.append(type_name, id, expected, events).await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.0
            .events_by_id(type_name, id, from)
            .try_filter(|(_, e)| std::future::ready(!e.is_empty()))
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        self.0
            .events_by_type(type_name, from)
            .try_filter(|e| std::future::ready(!e.event.is_empty()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_loses_zero_length_events() {
    let encoded = Prost.encode(&Reset { to: 0 }).unwrap();
    assert!(
        encoded.is_empty(),
        "a default prost message encodes to 0 bytes"
    );
    let log = DropsEmptyEvents::default();
    log.append("empty", "a", SeqNo::ZERO, &[encoded])
        .await
        .unwrap();
    let read: Vec<_> = log
        .events_by_id("empty", "a", SeqNo::new(1))
        .try_collect()
        .await
        .unwrap();
    assert!(
        read.is_empty(),
        "sanity: the broken log must lose the event"
    );
    assert!(
        !suite_passes(DropsEmptyEvents::default()).await,
        "the suite must reject a log that loses zero-length events \
         (Prost encodes default-valued messages to 0 bytes)"
    );
}

// ---------------------------------------------------------------------------
// Broken log 5: ids are escaped without escaping the escape character:
// ' ' is stored as '_' and '_' read back as ' '. "a b" and "a_b" collide.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct UnderscoreEscaping(MemoryEventLog);

fn escape(id: &str) -> String {
    id.replace(' ', "_")
}
fn unescape(id: &str) -> String {
    id.replace('_', " ")
}

impl EventLog for UnderscoreEscaping {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.0
            .append(type_name, &escape(id), expected, events)
            .await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, &escape(id)).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        // The inner stream borrows `escape(id)` (see finding: the returned
        // streams capture the argument lifetimes), so collect inside an owner.
        let (inner, type_name, id) = (self.0.clone(), type_name.to_owned(), escape(id));
        stream::once(async move {
            let all: Vec<_> = inner.events_by_id(&type_name, &id, from).collect().await;
            stream::iter(all)
        })
        .flatten()
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        self.0.events_by_type(type_name, from).map_ok(|mut e| {
            e.id = unescape(&e.id);
            e
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_whose_id_escaping_collides() {
    let log = UnderscoreEscaping::default();
    log.append("esc", "a b", SeqNo::ZERO, &["x".into()])
        .await
        .unwrap();
    let other = log.append("esc", "a_b", SeqNo::ZERO, &["y".into()]).await;
    assert!(
        other.is_err_and(|e| e.is_conflict()),
        "sanity: the broken log makes \"a_b\" collide with \"a b\""
    );
    assert!(
        !suite_passes(UnderscoreEscaping::default()).await,
        "the suite must reject a log in which the ids \"a b\" and \"a_b\" \
         are the same entity (ODD_IDS has no id containing an escape character)"
    );
}

// ---------------------------------------------------------------------------
// Broken log 6: live events (not catch-up ones) get their ids mangled:
// non-ASCII characters become '?'. The suite's live events all have ASCII ids.
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct LiveIdsMangled {
    t: Tracked,
}

impl EventLog for LiveIdsMangled {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.t.append(type_name, id, expected, events).await
    }
    delegate_reads!();
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        let catch_up = self.t.catch_up_len(type_name, from);
        self.t
            .inner
            .events_by_type(type_name, from)
            .enumerate()
            .map(move |(i, e)| {
                e.map(|mut e| {
                    if i >= catch_up {
                        e.id =
                            e.id.chars()
                                .map(|c| if c.is_ascii() { c } else { '?' })
                                .collect();
                    }
                    e
                })
            })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_mangles_ids_of_live_events() {
    let log = LiveIdsMangled::default();
    let mut live = Box::pin(log.events_by_type("live-ids", Position::START));
    log.append("live-ids", "日本語", SeqNo::ZERO, &["x".into()])
        .await
        .unwrap();
    let e = timeout(Duration::from_secs(5), live.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(e.id, "日本語", "sanity: the broken log mangles live ids");
    assert!(
        !suite_passes(LiveIdsMangled::default()).await,
        "the suite must reject a log that mangles the ids of events \
         delivered live (odd ids are only checked on catch-up)"
    );
}

// ---------------------------------------------------------------------------
// Broken snapshot stores: each keys its snapshots by a lossy function of
// (type, id), so that two entities share one snapshot.
// ---------------------------------------------------------------------------

/// Makes the (type, id) a store keeps a snapshot under from the entity's.
type Rekey = fn(&str, &str) -> (String, String);

/// A (type, id).
type Entity = (&'static str, &'static str);

/// The in-memory store under a key made by `rekey` from (type, id).
#[derive(Clone)]
struct Rekeyed {
    inner: MemorySnapshotStore,
    rekey: Rekey,
}

impl Rekeyed {
    fn new(rekey: Rekey) -> Self {
        Rekeyed {
            inner: MemorySnapshotStore::default(),
            rekey,
        }
    }
}

impl SnapshotStore for Rekeyed {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let (type_name, id) = (self.rekey)(type_name, id);
        self.inner.save(&type_name, &id, seq_no, state).await
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        let (type_name, id) = (self.rekey)(type_name, id);
        self.inner.load(&type_name, &id).await
    }
}

/// Each broken key, two entities it confuses, and what the suite must catch.
const REKEYINGS: &[(Rekey, Entity, Entity, &str)] = &[
    (
        |t, _id| (t.to_owned(), "the-only-one".to_owned()),
        ("t", "alice"),
        ("t", "bob"),
        "one snapshot per entity type, ignoring the id (entities would recover from \
         each other's state)",
    ),
    (
        |t, id| (t.to_owned(), id.replace(['.', ' ', '/', '*', '>'], "_")),
        ("t", "a.b"),
        ("t", "a b"),
        "separators all escaped to `_`, so \"a.b\" and \"a b\" share a snapshot",
    ),
    (
        |t, id| ("all".to_owned(), format!("{t}.{id}")),
        ("a", "b.c"),
        ("a.b", "c"),
        "type and id joined by a dot unescaped, so (\"a\", \"b.c\") and (\"a.b\", \"c\") \
         share a snapshot",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_suite_rejects_stores_whose_keys_collide() {
    for &(rekey, (type_a, id_a), (type_b, id_b), what) in REKEYINGS {
        let store = Rekeyed::new(rekey);
        store
            .save(type_a, id_a, SeqNo::new(3), "a's".into())
            .await
            .unwrap();
        assert_eq!(
            store.load(type_b, id_b).await.unwrap(),
            Some((SeqNo::new(3), Bytes::from("a's"))),
            "sanity: the broken store ({what}) loads another entity's snapshot"
        );
        assert!(
            !snapshot_suite_passes(Rekeyed::new(rekey)).await,
            "the suite must reject a store with {what}"
        );
    }
}

/// A store that checks "stored seq_no <= new" and writes in two steps (no
/// compare-and-swap): under concurrent saves an older one can win.
#[derive(Clone, Default)]
struct CheckThenWriteStore(Arc<Mutex<Snapshots>>);

/// (type, id) -> (seq_no, state).
type Snapshots = HashMap<(String, String), (SeqNo, Bytes)>;

impl SnapshotStore for CheckThenWriteStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let key = (type_name.to_owned(), id.to_owned());
        let stored = self.0.lock().unwrap().get(&key).map(|(s, _)| *s);
        if stored.is_some_and(|s| s > seq_no) {
            return Ok(());
        }
        // The round trip between the check and the write.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.0.lock().unwrap().insert(key, (seq_no, state));
        Ok(())
    }

    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&(type_name.to_owned(), id.to_owned()))
            .cloned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_suite_rejects_a_store_where_an_older_concurrent_save_wins() {
    // Precondition: the store loses the newer snapshot under concurrency.
    let store = CheckThenWriteStore::default();
    let (a, b) = (store.clone(), store.clone());
    let newer =
        tokio::spawn(async move { a.save("t", "x", SeqNo::new(20), Bytes::from("20")).await });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let older =
        tokio::spawn(async move { b.save("t", "x", SeqNo::new(10), Bytes::from("10")).await });
    newer.await.unwrap().unwrap();
    older.await.unwrap().unwrap();
    assert_eq!(
        store.load("t", "x").await.unwrap().map(|(s, _)| s),
        Some(SeqNo::new(10)),
        "precondition: an older concurrent save replaced a newer one"
    );
    assert!(
        !snapshot_suite_passes(CheckThenWriteStore::default()).await,
        "the suite must reject a store where a concurrent older save replaces a newer snapshot"
    );
}

/// The reference crate's defect: appends ignore the expected seq_no, so a
/// stale writer is never told.
#[derive(Debug, Clone, Default)]
struct IgnoresExpected(MemoryEventLog);

impl EventLog for IgnoresExpected {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        _expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        let actual = self.0.last_seq_no(type_name, id).await?;
        self.0.append(type_name, id, actual, events).await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        self.0.last_seq_no(type_name, id).await
    }
    fn events_by_id(
        &self,
        type_name: &str,
        id: &str,
        from: SeqNo,
    ) -> impl Stream<Item = Result<(SeqNo, Bytes), EventLogError>> + Send + 'static + use<> {
        self.0.events_by_id(type_name, id, from)
    }
    fn events_by_type(
        &self,
        type_name: &str,
        from: Position,
    ) -> impl Stream<Item = Result<EventEnvelope, EventLogError>> + Send + 'static + use<> {
        self.0.events_by_type(type_name, from)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_rejects_a_log_that_ignores_the_expected_seq_no() {
    assert!(
        !suite_passes(IgnoresExpected::default()).await,
        "the suite must reject a log without optimistic concurrency"
    );
}
