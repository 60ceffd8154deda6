//! The entity loop at its edges: batches with an unencodable event, replies
//! that wait for durability, queued commands of a failed append, panics in
//! user code, snapshots (several multiples, a hanging or panicking store),
//! odd and invalid ids, no runtime, and recovery racing a live writer.

use bytes::Bytes;
use eventsourced::{
    Binarize, BinarizeError, Command, CommandEffect, EntityRef, EventEnvelope, EventLog,
    EventLogError, EventSourced, EventSourcedExt, HandleCommandError, MemoryEventLog,
    MemorySnapshotStore, NoopSnapshotStore, Position, SeqNo, SerdeJson, SnapshotStore,
    SnapshotStoreError, SpawnError,
};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::{sync::Semaphore, time::timeout};

const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------- the entity

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Acct(u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Ev {
    Add(u64),
    /// Our Binarize refuses to encode this one.
    Unencodable,
    /// Our Binarize panics encoding this one.
    PanicEncode,
    /// handle_event panics on this one.
    PanicApply,
}

impl EventSourced for Acct {
    type Id = String;
    type Event = Ev;
    const TYPE_NAME: &'static str = "acct";
    fn handle_event(self, event: Ev) -> Self {
        match event {
            Ev::Add(n) => Acct(self.0 + n),
            Ev::PanicApply => panic!("user handle_event panicked"),
            _ => self,
        }
    }
}

struct Add(u64);
struct Emit(Vec<Ev>);
struct Get;
struct PanicInHandler;
struct PanicInReply;

impl Command<Acct> for Add {
    type Reply = u64;
    type Error = ();
    fn handle_command(self, _: &String, _: &Acct) -> CommandEffect<Acct, u64, ()> {
        CommandEffect::emit_and_reply(Ev::Add(self.0), |s: &Acct| s.0)
    }
}
impl Command<Acct> for Emit {
    type Reply = u64;
    type Error = ();
    fn handle_command(self, _: &String, _: &Acct) -> CommandEffect<Acct, u64, ()> {
        CommandEffect::emit_all_and_reply(self.0, |s: &Acct| s.0)
    }
}
impl Command<Acct> for Get {
    type Reply = u64;
    type Error = ();
    fn handle_command(self, _: &String, s: &Acct) -> CommandEffect<Acct, u64, ()> {
        CommandEffect::reply(s.0)
    }
}
impl Command<Acct> for PanicInHandler {
    type Reply = u64;
    type Error = ();
    fn handle_command(self, _: &String, _: &Acct) -> CommandEffect<Acct, u64, ()> {
        panic!("user handle_command panicked")
    }
}
impl Command<Acct> for PanicInReply {
    type Reply = u64;
    type Error = ();
    fn handle_command(self, _: &String, _: &Acct) -> CommandEffect<Acct, u64, ()> {
        CommandEffect::emit_and_reply(Ev::Add(1), |_: &Acct| panic!("user reply closure panicked"))
    }
}

/// SerdeJson, except that `Ev::Unencodable` fails and `Ev::PanicEncode` panics.
#[derive(Debug, Clone, Copy, Default)]
struct Picky;

impl Binarize<Ev> for Picky {
    fn encode(&self, value: &Ev) -> Result<Bytes, BinarizeError> {
        match value {
            Ev::Unencodable => Err(BinarizeError {
                direction: "encode",
                type_name: "Ev",
                format: "picky",
                source: "refused".into(),
            }),
            Ev::PanicEncode => panic!("user Binarize panicked"),
            other => SerdeJson.encode(other),
        }
    }
    fn decode(&self, bytes: Bytes) -> Result<Ev, BinarizeError> {
        SerdeJson.decode(bytes)
    }
}
impl Binarize<Acct> for Picky {
    fn encode(&self, value: &Acct) -> Result<Bytes, BinarizeError> {
        SerdeJson.encode(value)
    }
    fn decode(&self, bytes: Bytes) -> Result<Acct, BinarizeError> {
        SerdeJson.decode(bytes)
    }
}

// ---------------------------------------------------------------- backends

/// A memory log whose appends wait for a permit of `gate` (when gated), count,
/// and can fail the Nth append.
#[derive(Debug, Clone)]
struct GatedLog {
    inner: MemoryEventLog,
    gate: Arc<Semaphore>,
    gated: Arc<AtomicBool>,
    appends: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
    fail_at: Arc<AtomicUsize>,
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

impl GatedLog {
    fn new() -> Self {
        GatedLog {
            inner: MemoryEventLog::default(),
            gate: Arc::new(Semaphore::new(0)),
            gated: Arc::new(AtomicBool::new(false)),
            appends: Arc::default(),
            started: Arc::default(),
            fail_at: Arc::default(),
            batch_sizes: Arc::default(),
        }
    }
    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
    async fn wait_started(&self, n: usize) {
        for _ in 0..500 {
            if self.started.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("append {n} never started");
    }
}

impl EventLog for GatedLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            self.gate.acquire().await.unwrap().forget();
        }
        let n = self.appends.fetch_add(1, Ordering::SeqCst) + 1;
        self.batch_sizes.lock().unwrap().push(events.len());
        if n == self.fail_at.load(Ordering::SeqCst) {
            return Err(EventLogError::backend(
                "gated",
                "append",
                std::io::Error::other("disk on fire"),
            ));
        }
        self.inner
            .append(type_name, id, expected_last, events)
            .await
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
        self.inner.events_by_type(type_name, from)
    }
}

/// A snapshot store whose saves never finish (or panic), counting attempts.
#[derive(Debug, Clone, Default)]
struct OddStore {
    inner: MemorySnapshotStore,
    hang: bool,
    panic_first: bool,
    attempts: Arc<Mutex<Vec<SeqNo>>>,
}

impl SnapshotStore for OddStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        let first = {
            let mut a = self.attempts.lock().unwrap();
            a.push(seq_no);
            a.len() == 1
        };
        if self.hang {
            futures::future::pending::<()>().await;
        }
        if self.panic_first && first {
            panic!("snapshot store panicked once");
        }
        self.inner.save(type_name, id, seq_no, state).await
    }
    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        self.inner.load(type_name, id).await
    }
}

async fn spawn_gated(log: &GatedLog, max_batch: usize) -> EntityRef<Acct> {
    Acct::default()
        .entity()
        .max_batch(max_batch)
        .spawn("a".to_owned(), log.clone(), NoopSnapshotStore, Picky)
        .await
        .unwrap()
}

fn is_task_ended(e: &HandleCommandError) -> bool {
    matches!(e, HandleCommandError::TaskEnded { .. })
}

// ---------------------------------------------------------------- batching

/// While append 1 is held, queue A, B (unencodable), C, D; they form batch 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_encoding_failure_is_isolated_and_state_flows() {
    let log = GatedLog::new();
    log.gated.store(true, Ordering::SeqCst);
    let e = spawn_gated(&log, 100).await;
    let first = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Add(1)).await }
    });
    log.wait_started(1).await;
    let a = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Add(2)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = tokio::spawn({
        let e = e.clone();
        async move {
            e.handle_command(Emit(vec![Ev::Add(100), Ev::Unencodable]))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Add(3)).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let d = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Get).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!d.is_finished(), "Get must wait for the pending batch");
    log.open(10);
    assert_eq!(timeout(T, first).await.unwrap().unwrap().unwrap(), Ok(1));
    assert_eq!(timeout(T, a).await.unwrap().unwrap().unwrap(), Ok(3));
    let b = timeout(T, b).await.unwrap().unwrap();
    assert!(
        matches!(b, Err(HandleCommandError::EncodeEvent { .. })),
        "{b:?}"
    );
    assert_eq!(timeout(T, c).await.unwrap().unwrap().unwrap(), Ok(6));
    assert_eq!(timeout(T, d).await.unwrap().unwrap().unwrap(), Ok(6));
    assert_eq!(*log.batch_sizes.lock().unwrap(), vec![1, 2]);
    assert!(e.stopped().is_none());
}

/// A reply-only command queued behind a pending append never sees the pending state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_waits_for_durability() {
    let log = GatedLog::new();
    log.gated.store(true, Ordering::SeqCst);
    let e = spawn_gated(&log, 100).await;
    let w = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Add(5)).await }
    });
    log.wait_started(1).await;
    let g = tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Get).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!g.is_finished() && !w.is_finished());
    log.open(1);
    assert_eq!(timeout(T, w).await.unwrap().unwrap().unwrap(), Ok(5));
    assert_eq!(timeout(T, g).await.unwrap().unwrap().unwrap(), Ok(5));
}

/// max_batch 1: queued commands (not in the failing batch) get the append's cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_get_the_append_cause() {
    let log = GatedLog::new();
    log.gated.store(true, Ordering::SeqCst);
    log.fail_at.store(1, Ordering::SeqCst);
    let e = spawn_gated(&log, 1).await;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn({
        let e = e.clone();
        async move { e.handle_command(Add(1)).await }
    }));
    log.wait_started(1).await;
    for i in 0..5u64 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move { e.handle_command(Add(i)).await }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    log.open(10);
    for t in tasks {
        let r = timeout(T, t).await.expect("no hang").unwrap();
        let err = r.expect_err("must fail");
        assert!(err.to_string().contains("disk on fire"), "{err}");
    }
    assert_eq!(log.appends.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------- panics

async fn panics_are_reported<C>(cmd: C)
where
    C: Command<Acct, Reply = u64, Error = ()>,
{
    let log = GatedLog::new();
    let e = spawn_gated(&log, 100).await;
    assert_eq!(e.handle_command(Add(1)).await.unwrap(), Ok(1));
    let r = timeout(T, e.handle_command(cmd)).await.expect("no hang");
    let err = r.expect_err("a technical error");
    assert!(is_task_ended(&err), "{err:?}");
    let later = timeout(T, e.clone().handle_command(Get))
        .await
        .expect("no hang");
    assert!(later.is_err());
    assert!(e.stopped().is_some());
    assert_eq!(
        log.inner.last_seq_no("acct", "a").await.unwrap(),
        SeqNo::new(1)
    );
}

#[tokio::test]
async fn panic_in_handle_command_is_reported() {
    panics_are_reported(PanicInHandler).await;
}
#[tokio::test]
async fn panic_in_reply_closure_is_reported() {
    panics_are_reported(PanicInReply).await;
}
#[tokio::test]
async fn panic_in_handle_event_is_reported() {
    panics_are_reported(Emit(vec![Ev::PanicApply])).await;
}
#[tokio::test]
async fn panic_in_binarize_is_reported() {
    panics_are_reported(Emit(vec![Ev::PanicEncode])).await;
}

// ---------------------------------------------------------------- snapshots

async fn snapshot_at<S: SnapshotStore>(store: &S, seq_no: u64) -> Option<Bytes> {
    for _ in 0..200 {
        if let Some((s, bytes)) = store.load("acct", "a").await.unwrap()
            && s == SeqNo::new(seq_no)
        {
            return Some(bytes);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn one_command_crossing_several_multiples_snapshots() {
    let store = MemorySnapshotStore::default();
    let e = Acct::default()
        .entity()
        .snapshot_every(10)
        .spawn(
            "a".to_owned(),
            MemoryEventLog::default(),
            store.clone(),
            Picky,
        )
        .await
        .unwrap();
    let evs = (0..25).map(|_| Ev::Add(1)).collect();
    assert_eq!(e.handle_command(Emit(evs)).await.unwrap(), Ok(25));
    let b = snapshot_at(&store, 25).await.expect("snapshot at 25");
    assert_eq!(serde_json::from_slice::<Acct>(&b).unwrap(), Acct(25));
}

#[tokio::test]
async fn hanging_snapshot_save_does_not_block_commands() {
    let store = OddStore {
        hang: true,
        ..Default::default()
    };
    let e = Acct::default()
        .entity()
        .snapshot_every(1)
        .spawn(
            "a".to_owned(),
            MemoryEventLog::default(),
            store.clone(),
            Picky,
        )
        .await
        .unwrap();
    for i in 1..=50 {
        let r = timeout(T, e.handle_command(Add(1)))
            .await
            .expect("not blocked");
        assert_eq!(r.unwrap(), Ok(i));
    }
}

/// A save that panics once must not end snapshotting for the entity's life.
#[tokio::test]
async fn snapshot_store_panic_does_not_stop_later_snapshots() {
    let store = OddStore {
        panic_first: true,
        ..Default::default()
    };
    let e = Acct::default()
        .entity()
        .snapshot_every(3)
        .spawn(
            "a".to_owned(),
            MemoryEventLog::default(),
            store.clone(),
            Picky,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        e.handle_command(Add(1)).await.unwrap().unwrap();
    }
    for _ in 0..100 {
        if !store.attempts.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        e.handle_command(Add(1)).await.unwrap().unwrap();
    }
    assert!(
        snapshot_at(&store.inner, 6).await.is_some(),
        "no snapshot at 6 after one panicking save; attempts: {:?}",
        store.attempts.lock().unwrap()
    );
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test]
async fn dropping_all_refs_stops_the_task() {
    let log = GatedLog::new();
    let marker = log.appends.clone();
    let e = spawn_gated(&log, 10).await;
    let e2 = e.clone();
    e.handle_command(Add(1)).await.unwrap().unwrap();
    drop(log);
    drop(e);
    drop(e2);
    for _ in 0..200 {
        if Arc::strong_count(&marker) == 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the entity task kept its log after every ref was dropped");
}

#[tokio::test]
async fn odd_ids_round_trip_through_the_entity() {
    let log = MemoryEventLog::default();
    for id in ["a.b c", "*", ">", "ü/ß", "x/y"] {
        let e = Acct::default()
            .entity()
            .spawn(id.to_owned(), log.clone(), NoopSnapshotStore, Picky)
            .await
            .unwrap();
        assert_eq!(e.handle_command(Add(2)).await.unwrap(), Ok(2));
        drop(e);
        let e = Acct::default()
            .entity()
            .spawn(id.to_owned(), log.clone(), NoopSnapshotStore, Picky)
            .await
            .unwrap();
        assert_eq!(e.handle_command(Get).await.unwrap(), Ok(2), "{id}");
    }
}

/// An id no log can store must be refused by spawn, not by the first write
/// (which also kills the entity for good).
#[tokio::test]
async fn empty_id_is_refused_at_spawn() {
    let r = Acct::default()
        .entity()
        .spawn(
            String::new(),
            MemoryEventLog::default(),
            NoopSnapshotStore,
            Picky,
        )
        .await;
    match r {
        Err(e @ SpawnError::InvalidId { .. }) => assert!(e.to_string().contains("empty"), "{e}"),
        Err(e) => panic!("not InvalidId: {e:?}"),
        Ok(e) => {
            let first_write = e.handle_command(Add(1)).await;
            panic!(
                "spawn accepted an empty id; first write: {first_write:?}; stopped: {:?}",
                e.stopped()
            );
        }
    }
}

/// Spawning without a tokio runtime must be a typed error, not a panic in library code.
#[test]
fn spawn_without_a_runtime_is_a_typed_error() {
    let r = std::panic::catch_unwind(|| {
        futures::executor::block_on(Acct::default().entity().spawn(
            "a".to_owned(),
            MemoryEventLog::default(),
            NoopSnapshotStore,
            Picky,
        ))
    });
    match r {
        Ok(Ok(_)) => panic!("spawned without runtime?"),
        Ok(Err(SpawnError::NoRuntime)) => {}
        Ok(Err(e)) => panic!("not NoRuntime: {e:?}"),
        Err(p) => panic!(
            "library code panicked: {:?}",
            p.downcast_ref::<String>()
                .cloned()
                .or(p.downcast_ref::<&str>().map(|s| s.to_string()))
        ),
    }
}

#[tokio::test]
async fn options_are_validated() {
    for (mb, mx) in [(0usize, 1usize), (1, 0), (usize::MAX, 1)] {
        let r = Acct::default()
            .entity()
            .mailbox_size(mb)
            .max_batch(mx)
            .spawn(
                "a".to_owned(),
                MemoryEventLog::default(),
                NoopSnapshotStore,
                Picky,
            )
            .await;
        assert!(matches!(r, Err(SpawnError::InvalidOptions(_))), "{mb} {mx}");
    }
    // The largest allowed mailbox works.
    let e = Acct::default()
        .entity()
        .mailbox_size(usize::MAX >> 3)
        .spawn(
            "a".to_owned(),
            MemoryEventLog::default(),
            NoopSnapshotStore,
            Picky,
        )
        .await
        .unwrap();
    assert_eq!(e.handle_command(Add(1)).await.unwrap(), Ok(1));
}

// ------------------------------------------- recovery reads race a live writer

/// A log + store pair where "another writer" (e.g. the old instance during a
/// hand-over) appends 5 events and then snapshots at 5 between recovery's two
/// reads, whichever of them comes first. Snapshot loads take a scheduler turn,
/// like any networked store.
#[derive(Debug, Clone)]
struct RacyLog {
    inner: MemoryEventLog,
    store: MemorySnapshotStore,
    first_done: Arc<AtomicBool>,
}

impl RacyLog {
    async fn other_writer_if_first(&self) {
        if !self.first_done.swap(true, Ordering::SeqCst) {
            let evs: Vec<Bytes> = (0..5)
                .map(|_| SerdeJson.encode(&Ev::Add(1)).unwrap())
                .collect();
            self.inner
                .append("acct", "a", SeqNo::ZERO, &evs)
                .await
                .unwrap();
            let snap = Binarize::<Acct>::encode(&SerdeJson, &Acct(5)).unwrap();
            self.store
                .save("acct", "a", SeqNo::new(5), snap)
                .await
                .unwrap();
        }
    }
}

impl EventLog for RacyLog {
    async fn append(
        &self,
        type_name: &str,
        id: &str,
        expected_last: SeqNo,
        events: &[Bytes],
    ) -> Result<SeqNo, EventLogError> {
        self.inner
            .append(type_name, id, expected_last, events)
            .await
    }
    async fn last_seq_no(&self, type_name: &str, id: &str) -> Result<SeqNo, EventLogError> {
        let last = self.inner.last_seq_no(type_name, id).await;
        self.other_writer_if_first().await;
        last
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
        self.inner.events_by_type(type_name, from)
    }
}

#[derive(Debug, Clone)]
struct RacyStore(RacyLog);

impl SnapshotStore for RacyStore {
    async fn save(
        &self,
        type_name: &str,
        id: &str,
        seq_no: SeqNo,
        state: Bytes,
    ) -> Result<(), SnapshotStoreError> {
        self.0.store.save(type_name, id, seq_no, state).await
    }
    async fn load(
        &self,
        type_name: &str,
        id: &str,
    ) -> Result<Option<(SeqNo, Bytes)>, SnapshotStoreError> {
        tokio::task::yield_now().await; // a network round trip
        let snap = self.0.store.load(type_name, id).await;
        self.0.other_writer_if_first().await;
        snap
    }
}

/// Recovery reads the snapshot and the log's last seq_no at once; a writer that
/// appends and snapshots in between must not make a healthy pair look like a
/// snapshot ahead of its log (appends precede their snapshot, so a second read
/// of the log settles it).
#[tokio::test]
async fn recovery_racing_a_writer_that_snapshots_is_not_corrupt() {
    let log = RacyLog {
        inner: MemoryEventLog::default(),
        store: MemorySnapshotStore::default(),
        first_done: Arc::default(),
    };
    let r = Acct::default()
        .entity()
        .spawn(
            "a".to_owned(),
            log.clone(),
            RacyStore(log.clone()),
            SerdeJson,
        )
        .await;
    match r {
        Ok(e) => assert_eq!(e.handle_command(Get).await.unwrap(), Ok(5)),
        Err(e) => panic!("healthy log and store refused: {e}"),
    }
}
