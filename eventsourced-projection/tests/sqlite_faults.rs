//! SQLite projections under faults: a writer holding the file's lock beyond
//! the busy timeout, two processes sharing the lease (one killed with
//! SIGKILL), a full disk, an immutable file, rebuild while another instance
//! holds the lease, and stop during a blocking handler.
//!
//! The contract (DESIGN.md, "Projections" and "Bad input and faults"): an
//! infrastructure fault is shown in `last_error`, the projection restarts
//! with backoff (never Skip or Stop: the fault is not the handler's), and
//! catches up exactly (exactly once for the transactional sink, at least
//! once with no gap otherwise) once the fault ends; `state()` and `stop()`
//! return within ~8 s meanwhile.
//!
//! Needs root for the tmpfs (`mount`) and `chattr +i` tests.
//! The test binary also serves as the child process of the lease test: run
//! with `SQLITE_FAULTS_CHILD=<dir>` and the filter `lease_child_process`, it
//! runs the shared projection until killed or its stdin closes.
#![cfg(feature = "sqlite")]

mod support;

use eventsourced::{Binarize, EventLog, MemoryEventLog, Position, SerdeJson};
use eventsourced_projection::{
    AtLeastOnce, ErrorAction, ErrorStrategy, HandlerError, InProcessLease, OffsetStore, Phase,
    ProjectedEvent, Projection, ProjectionBuilder, ProjectionSink, ProjectionState,
    sqlite::{
        SqliteExactlyOnce, SqliteHandler, SqliteLag, SqliteLease, SqliteOffsetStore,
        rusqlite::{Connection, Transaction, params},
    },
};
use eventsourced_sqlite::{SqliteConfig, SqliteEventLog};
use std::{
    collections::HashMap,
    future::Future,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use support::{Recorder, WAIT, sq};

/// `state()` and `stop()` must return within this, whatever the fault.
const PROMPT: Duration = Duration::from_secs(8);
/// The busy timeout of `SqliteOffsetStore` (10 s, not configurable) plus margin.
const PAST_BUSY_TIMEOUT: Duration = Duration::from_secs(20);
const TYPE_NAME: &str = "counter";
const CHILD_ENV: &str = "SQLITE_FAULTS_CHILD";
const SHARED: &str = "shared";
const LEASE_TTL: Duration = Duration::from_millis(1500);
/// What `last_error` says of a write lock held by another connection.
const LOCKED: &[&str] = &["locked", "busy"];

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// id → (total, events, last_seq_no): what `sq::SqTotals` must hold.
#[derive(Debug, Default, Clone, PartialEq)]
struct Fold(HashMap<String, (i64, i64, i64)>);

impl Fold {
    fn add(&mut self, id: &str, values: &[i64]) {
        let entry = self.0.entry(id.to_owned()).or_default();
        for v in values {
            entry.0 += v;
            entry.1 += 1;
            entry.2 = entry.1;
        }
    }

    fn events(&self) -> u64 {
        self.0.values().map(|e| u64::try_from(e.1).unwrap()).sum()
    }
}

async fn append<L: EventLog>(log: &L, fold: &mut Fold, id: &str, values: &[i64]) {
    support::append(log, TYPE_NAME, id, values).await;
    fold.add(id, values);
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Runs `f`, returning its output and how long it took.
async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// Runs `f`, failing if it takes longer than [`PROMPT`] (bounded at 30 s so
/// that a hang fails instead of blocking the suite).
async fn prompt<T>(what: &str, f: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for 30 s"));
    let took = started.elapsed();
    assert!(
        took <= PROMPT,
        "{what} took {took:?} (more than {PROMPT:?})"
    );
    out
}

async fn wait<L, B, S>(
    p: &Projection<L, B, S>,
    what: &str,
    timeout: Duration,
    condition: impl FnMut(&ProjectionState) -> bool,
) -> ProjectionState
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    match p.wait_for(condition, timeout).await {
        Some(s) => s,
        None => panic!(
            "{what}: not within {timeout:?}; state {:?}",
            p.state().await
        ),
    }
}

/// The fault was handled as an infrastructure fault: restarting, not
/// skipping or stopping.
fn assert_restarting(s: &ProjectionState, cause: &[&str]) {
    let last = s.last_error.as_ref().expect("a last error");
    assert!(
        cause
            .iter()
            .any(|c| last.message.to_lowercase().contains(c)),
        "last_error does not name the cause ({cause:?}): {last:?}"
    );
    assert_eq!(
        last.action,
        ErrorAction::Restarting,
        "an infrastructure fault must restart the projection, not {:?}: {s:?}",
        last.action
    );
    assert_ne!(s.phase, Phase::Failed, "{s:?}");
    assert_eq!(
        s.skipped, 0,
        "an event was skipped because of the fault: {s:?}"
    );
}

/// `read.db` in a fresh temporary directory, and its offset store.
async fn read_db() -> (tempfile::TempDir, PathBuf, SqliteOffsetStore) {
    let dir = tempfile::tempdir().unwrap();
    let read = dir.path().join("read.db");
    let store = SqliteOffsetStore::open(&read).await.unwrap();
    (dir, read, store)
}

/// A fresh `read.db` (with the tables of [`Faulty`] if `tables`) and a
/// memory log holding `first` as the events of entity "a".
async fn setup(
    tables: bool,
    first: &[i64],
) -> (
    tempfile::TempDir,
    PathBuf,
    SqliteOffsetStore,
    MemoryEventLog,
    Fold,
) {
    let (dir, read, store) = read_db().await;
    if tables {
        create_tables(&store).await;
    }
    let log = MemoryEventLog::default();
    let mut fold = Fold::default();
    append(&log, &mut fold, "a", first).await;
    (dir, read, store, log, fold)
}

/// A projection `name` of `sink` that polls without delay (`max_wait` 0).
fn builder<L, S>(name: &str, log: L, sink: S) -> ProjectionBuilder<L, SerdeJson, S>
where
    L: EventLog,
    S: ProjectionSink,
    SerdeJson: Binarize<S::Event>,
{
    Projection::builder(name, TYPE_NAME, log, SerdeJson, sink).max_wait(Duration::ZERO)
}

/// [`builder`] for the fault scenarios: `Skip` for handler errors (a fault
/// taken for a handler error would show up as skipped events), quick
/// restarts, an in-process lease.
fn restarting<L, S>(name: &str, log: L, sink: S) -> ProjectionBuilder<L, SerdeJson, S>
where
    L: EventLog,
    S: ProjectionSink,
    SerdeJson: Binarize<S::Event>,
{
    builder(name, log, sink)
        .error_strategy(ErrorStrategy::Skip)
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .lease(InProcessLease::default())
}

/// Waits (bounded by [`WAIT`]) for the offset to be `offset`.
async fn wait_offset<L, B, S>(p: &Projection<L, B, S>, what: &str, offset: u64) -> ProjectionState
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    wait(p, what, WAIT, |s| s.offset == Some(Position::new(offset))).await
}

/// Polls `done` every 10 ms, failing with `what` after [`WAIT`].
async fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded by `timeout`) for `fault` to show in `last_error`, checks
/// it was taken for an infrastructure fault naming one of `cause`
/// ([`assert_restarting`]), then that `state()` is prompt `during` the fault.
/// Returns the state with the error and the prompt one.
async fn restarts_on<L, B, S>(
    p: &Projection<L, B, S>,
    fault: &str,
    during: &str,
    timeout: Duration,
    cause: &[&str],
) -> (ProjectionState, ProjectionState)
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    let s = wait(p, &format!("{fault} shows in last_error"), timeout, |s| {
        s.last_error.is_some()
    })
    .await;
    println!("{fault}: {:?}", s.last_error);
    assert_restarting(&s, cause);
    let prompted = prompt(&format!("state() {during}"), p.state()).await;
    (s, prompted)
}

/// `stop()` is prompt `during` the fault; the projection runs again and
/// retries for a while before the fault ends.
async fn stop_and_run_again<L, B, S>(p: &Projection<L, B, S>, during: &str)
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    prompt(&format!("stop() {during}"), p.stop()).await;
    p.run().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Waits for the catch-up to `offset`, then stops promptly; returns the
/// state before the stop.
async fn catch_up_and_stop<L, B, S>(
    p: &Projection<L, B, S>,
    what: &str,
    offset: u64,
) -> ProjectionState
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    wait_offset(p, what, offset).await;
    let s = p.state().await;
    prompt("stop()", p.stop()).await;
    s
}

/// The read model holds every event of `fold` exactly once.
async fn assert_totals(store: &SqliteOffsetStore, fold: &Fold, what: &str) {
    assert_eq!(sq::totals(store).await, fold.0, "{what}");
}

/// Another connection holding the file's write lock (`BEGIN EXCLUSIVE`)
/// until released (or at most `max`).
struct Locker {
    release: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Locker {
    fn take(path: &Path, max: Duration) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let path = path.to_owned();
        let thread = std::thread::spawn(move || {
            let c = Connection::open(&path).expect("locker opens");
            c.busy_timeout(Duration::from_secs(15)).unwrap();
            c.execute_batch("BEGIN EXCLUSIVE").expect("BEGIN EXCLUSIVE");
            ready_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(max);
            c.execute_batch("ROLLBACK").expect("ROLLBACK");
        });
        ready_rx
            .recv_timeout(Duration::from_secs(15))
            .expect("the write lock is taken");
        Locker {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }

    fn release(mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            t.join().expect("locker thread");
        }
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        drop(self.release.take());
    }
}

/// `sq::SqTotals` with extra effects: a blob per event (to fill a disk), a
/// trace line per attempt outside the transaction (to see who handled
/// when), a one-time block at a position.
#[derive(Debug, Default)]
struct Faulty {
    totals: sq::SqTotals,
    blob: usize,
    trace: Option<PathBuf>,
    block: Option<(u64, Duration)>,
    entered: Arc<AtomicBool>,
}

impl SqliteHandler for Faulty {
    type Event = i64;

    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        e: &ProjectedEvent<i64>,
    ) -> Result<(), HandlerError> {
        if let Some(path) = &self.trace {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(
                f,
                "{} {} {}",
                std::process::id(),
                e.position.get(),
                now_ms()
            )?;
        }
        if let Some((position, d)) = self.block
            && position == e.position.get()
        {
            self.block = None;
            self.entered.store(true, Ordering::SeqCst);
            std::thread::sleep(d);
        }
        self.totals.handle(tx, e)?;
        if self.blob > 0 {
            let position = i64::try_from(e.position.get())?;
            let size = i64::try_from(self.blob)?;
            tx.execute(
                "INSERT INTO blobs (position, data) VALUES (?1, randomblob(?2))",
                params![position, size],
            )?;
        }
        Ok(())
    }

    fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        self.totals.reset(tx)?;
        tx.execute("DELETE FROM blobs", [])?;
        Ok(())
    }
}

async fn create_tables(store: &SqliteOffsetStore) {
    sq::create_totals(store).await;
    store
        .with_connection(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS blobs (position INTEGER PRIMARY KEY, data BLOB NOT NULL)",
            )
        })
        .await
        .expect("create blobs");
}

async fn blob_count(store: &SqliteOffsetStore) -> i64 {
    store
        .with_connection(|c| c.query_row("SELECT count(*) FROM blobs", [], |r| r.get(0)))
        .await
        .expect("count blobs")
}

/// Runs the scenarios concurrently (one busy timeout for all), then fails
/// with every failed scenario's message.
async fn all(scenarios: Vec<(&'static str, tokio::task::JoinHandle<()>)>) {
    let mut failures = Vec::new();
    for (name, handle) in scenarios {
        if let Err(e) = handle.await {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failures.push(format!("[{name}] {msg}"));
        } else {
            println!("[{name}] ok");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// 1. A writer holds the file's lock beyond the busy timeout.
// ---------------------------------------------------------------------------

/// Exactly-once sink: the batch's `BEGIN IMMEDIATE` waits the busy timeout,
/// fails, the projection restarts until the lock is gone, then each event
/// counts once. `state()` (with a lag source on the blocked connection)
/// stays prompt.
async fn lock_exactly_once() {
    let (dir, read, store) = read_db().await;
    let log = SqliteEventLog::open(dir.path().join("events.db")).unwrap();
    create_tables(&store).await;
    let mut fold = Fold::default();
    append(&log, &mut fold, "a", &[1, 2, 3]).await;
    append(&log, &mut fold, "b", &[10]).await;
    // Skip would show up as skipped events if the lock were taken for a
    // handler error.
    let p = restarting(
        "locked-eo",
        log.clone(),
        store.clone().exactly_once(Faulty::default()),
    )
    // Lag on the store's own connection, which the blocked commit holds.
    .lag_source(SqliteLag::with_query(
        &store,
        "SELECT length(?1) * 0 + ?2 * 0",
    ))
    .build()
    .unwrap();
    p.run().await;
    wait_offset(&p, "first events", 4).await;

    let locker = Locker::take(&read, Duration::from_secs(25));
    append(&log, &mut fold, "a", &[4, 5]).await;
    append(&log, &mut fold, "b", &[20]).await;
    let (s, during) =
        restarts_on(&p, "the lock", "under the lock", PAST_BUSY_TIMEOUT, LOCKED).await;
    assert_eq!(s.offset, Some(Position::new(4)), "{s:?}");
    assert_ne!(during.phase, Phase::Failed);
    locker.release();

    let s = catch_up_and_stop(&p, "catch-up after the lock", 7).await;
    assert_eq!((s.handled, s.skipped), (7, 0), "{s:?}");
    assert_totals(&store, &fold, "exactly once after the lock").await;
}

/// At-least-once sink (`AtLeastOnce` over `SqliteOffsetStore`): the offset
/// save fails after the busy timeout, the events come again after the
/// restart, none is missing.
async fn lock_at_least_once() {
    let (_dir, read, store, log, mut fold) = setup(false, &[1, 2]).await;
    let recorder = Recorder::default();
    let p = restarting(
        "locked-alo",
        log.clone(),
        AtLeastOnce::new(store.clone(), recorder.clone()),
    )
    .build()
    .unwrap();
    p.run().await;
    wait_offset(&p, "first events", 2).await;

    let locker = Locker::take(&read, Duration::from_secs(25));
    append(&log, &mut fold, "a", &[3, 4]).await;
    append(&log, &mut fold, "b", &[5]).await;
    restarts_on(&p, "the lock", "under the lock", PAST_BUSY_TIMEOUT, LOCKED).await;
    locker.release();

    catch_up_and_stop(&p, "catch-up after the lock", 5).await;
    assert_eq!(
        store.load("locked-alo").await.unwrap(),
        Some(Position::new(5))
    );
    let mut positions = recorder.seen().positions();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions, vec![1, 2, 3, 4, 5], "a gap after the lock");
    assert_eq!(
        recorder
            .seen()
            .attempts
            .values()
            .filter(|n| **n == 0)
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_lock_beyond_the_busy_timeout_restarts_and_catches_up() {
    all(vec![
        ("exactly once", tokio::spawn(lock_exactly_once())),
        ("at least once", tokio::spawn(lock_at_least_once())),
    ])
    .await;
}

/// Stops `p` while `locker` holds the lock, then releases it; returns how
/// long `stop()` took and the state right after it.
async fn stop_under_lock<L, B, S>(
    p: &Projection<L, B, S>,
    locker: Locker,
) -> (Duration, ProjectionState)
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    let ((), took) = timed(p.stop()).await;
    let s = p.state().await;
    locker.release();
    (took, s)
}

/// Whatever the last stop took, a new run catches up to `offset`.
async fn run_and_catch_up<L, B, S>(p: &Projection<L, B, S>, offset: u64)
where
    L: EventLog,
    S: ProjectionSink,
    B: Binarize<S::Event>,
{
    p.run().await;
    wait_offset(p, "catch-up", offset).await;
    p.stop().await;
}

/// `stop()` while an `AtLeastOnce` offset save waits for the lock.
async fn stop_under_lock_at_least_once() {
    let (_dir, read, store, log, mut fold) = setup(false, &[1]).await;
    let recorder = Recorder::default();
    let p = builder(
        "stop-alo",
        log.clone(),
        AtLeastOnce::new(store.clone(), recorder.clone()),
    )
    .lease(InProcessLease::default())
    .build()
    .unwrap();
    p.run().await;
    wait_offset(&p, "first event", 1).await;
    let locker = Locker::take(&read, Duration::from_secs(15));
    append(&log, &mut fold, "a", &[2]).await;
    // The handler has seen the event: its offset save now waits for the lock.
    poll_until("event 2 not handled", || {
        recorder.seen().positions().contains(&2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (took, _) = stop_under_lock(&p, locker).await;
    run_and_catch_up(&p, 2).await;
    assert!(
        took <= PROMPT,
        "stop() took {took:?} while an offset save waited for the lock (more than {PROMPT:?})"
    );
}

/// `stop()` while the exactly-once batch waits for the lock, with the
/// lease in the same (locked) file.
async fn stop_under_lock_with_the_sqlite_lease() {
    let (_dir, read, store, log, mut fold) = setup(true, &[1, 2]).await;
    let p = builder(
        "stop-lease",
        log.clone(),
        store.clone().exactly_once(Faulty::default()),
    )
    .restart_backoff(Duration::from_millis(50), Duration::from_millis(400))
    .lease(
        SqliteLease::new(&read)
            .ttl(Duration::from_secs(3))
            .retry_interval(Duration::from_millis(50)),
    )
    .build()
    .unwrap();
    p.run().await;
    wait_offset(&p, "first events", 2).await;
    let locker = Locker::take(&read, Duration::from_secs(14));
    append(&log, &mut fold, "a", &[3]).await;
    // The batch waits for the lock; a lease renewal (every ttl / 3) too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (took, stopped) = stop_under_lock(&p, locker).await;
    assert_eq!(stopped.phase, Phase::Stopped);
    run_and_catch_up(&p, 3).await;
    assert_totals(&store, &fold, "exactly once").await;
    assert!(
        took <= PROMPT,
        "stop() took {took:?} while the batch and the lease waited for the lock \
         (more than {PROMPT:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_under_a_write_lock_returns_within_8s() {
    all(vec![
        (
            "AtLeastOnce offset save",
            tokio::spawn(stop_under_lock_at_least_once()),
        ),
        (
            "exactly once + SqliteLease",
            tokio::spawn(stop_under_lock_with_the_sqlite_lease()),
        ),
    ])
    .await;
}

// ---------------------------------------------------------------------------
// 2. The lease across two real processes; the holder is killed with SIGKILL.
// ---------------------------------------------------------------------------

fn follow_fast() -> SqliteConfig {
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::from_millis(20);
    config
}

/// The child process: runs the shared projection until killed or its stdin
/// closes. A no-op in a normal test run.
#[test]
fn lease_child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::thread::spawn(|| {
        let mut buf = [0u8; 16];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let log = SqliteEventLog::open_with(dir.join("events.db"), follow_fast()).expect("log");
        let read = dir.join("read.db");
        let store = SqliteOffsetStore::open(&read).await.expect("store");
        let handler = Faulty {
            trace: Some(dir.join("trace")),
            ..Faulty::default()
        };
        let p = builder(SHARED, log, store.exactly_once(handler))
            .restart_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .lease(
                SqliteLease::new(&read)
                    .ttl(LEASE_TTL)
                    .retry_interval(Duration::from_millis(50)),
            )
            .build()
            .expect("projection");
        p.run().await;
        println!("child-ready");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s = p.state().await;
            if s.last_error.is_some() {
                eprintln!("child {}: {:?}", std::process::id(), s.last_error);
            }
        }
    });
}

/// Children killed when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_child(dir: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "lease_child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("child-ready") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the child is ready");
    child
}

/// (pid, position, ms) per handler attempt.
fn trace(dir: &Path) -> Vec<(u32, u64, u128)> {
    std::fs::read_to_string(dir.join("trace"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_lease_and_the_survivor_takes_over_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open_with(dir.path().join("events.db"), follow_fast()).unwrap();
    let store = SqliteOffsetStore::open(dir.path().join("read.db"))
        .await
        .unwrap();
    create_tables(&store).await;
    let mut children = Children(Vec::new());
    children.0.push(spawn_child(dir.path()));
    children.0.push(spawn_child(dir.path()));
    let pids: Vec<u32> = children.0.iter().map(Child::id).collect();

    let mut fold = Fold::default();
    let mut n = 0i64;
    let ids = ["a", "b", "c", "d"];
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) || trace(dir.path()).is_empty() {
        assert!(started.elapsed() < WAIT, "no child handles events");
        n += 1;
        append(&log, &mut fold, ids[usize::try_from(n).unwrap() % 4], &[n]).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let holder = trace(dir.path()).last().unwrap().0;
    assert!(pids.contains(&holder), "trace pid {holder} is no child");
    let index = pids.iter().position(|p| *p == holder).unwrap();
    let survivor = pids[1 - index];
    let mut killed = children.0.remove(index);
    killed.kill().expect("SIGKILL");
    killed.wait().unwrap();
    let killed_at = now_ms();

    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(4) {
        n += 1;
        append(&log, &mut fold, ids[usize::try_from(n).unwrap() % 4], &[n]).await;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let all_events = Position::new(fold.events());
    let deadline = Instant::now() + WAIT;
    loop {
        let offset = store.load(SHARED).await.unwrap();
        if offset == Some(all_events) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor did not catch up: offset {offset:?}, want {all_events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(children);

    let trace = trace(dir.path());
    // One handler at a time: the trace is the holder's attempts, then the
    // survivor's, never interleaved.
    let switches: Vec<_> = trace.windows(2).filter(|w| w[0].0 != w[1].0).collect();
    assert!(
        switches.len() == 1 && switches[0][0].0 == holder && switches[0][1].0 == survivor,
        "handlers of both processes interleaved (holder {holder}, survivor {survivor}): {switches:?}"
    );
    let first_survivor = trace.iter().find(|t| t.0 == survivor).unwrap();
    let takeover = first_survivor.2.saturating_sub(killed_at);
    println!("takeover {takeover} ms after SIGKILL (ttl {LEASE_TTL:?})");
    assert!(
        takeover <= 5000,
        "the survivor took over {takeover} ms after SIGKILL (ttl {LEASE_TTL:?})"
    );
    assert_totals(&store, &fold, "exactly once across the kill").await;
}

// ---------------------------------------------------------------------------
// 3. A full disk (small tmpfs) and an immutable file.
// ---------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount a tmpfs (needs root)");
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system of `path` with a file there.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    for size in [1 << 16, 4096, 512, 1] {
        let buf = vec![0u8; size];
        while f.write_all(&buf).is_ok() {}
    }
    let _ = f.sync_all();
}

/// Disk full at `COMMIT` (small writes that fit the page cache), or inside
/// the handler's statements (a batch larger than the page cache spills to
/// the write-ahead log). Either way an infrastructure fault: restart, and
/// exactly once after space is freed.
async fn disk_full(name: &str, size: &str, blob: usize, events: usize, cache_pages: Option<i64>) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount(&mnt, size);
    {
        let store = SqliteOffsetStore::open(mnt.join("read.db")).await.unwrap();
        create_tables(&store).await;
        if let Some(pages) = cache_pages {
            store
                .with_connection(move |c| c.pragma_update(None, "cache_size", pages))
                .await
                .unwrap();
        }
        let log = MemoryEventLog::default();
        let mut fold = Fold::default();
        append(&log, &mut fold, "a", &[1, 2]).await;
        let handler = Faulty {
            blob,
            ..Faulty::default()
        };
        let p = restarting(name, log.clone(), store.clone().exactly_once(handler))
            .batch_size(100)
            .max_wait(Duration::from_millis(100))
            .build()
            .unwrap();
        p.run().await;
        wait_offset(&p, "first events", 2).await;

        let filler = mnt.join("filler");
        fill(&filler);
        let values: Vec<i64> = (3..).take(events).collect();
        append(&log, &mut fold, "a", &values).await;
        let during = "with a full disk";
        let fault = format!("[{name}] disk full");
        let (s, _) = restarts_on(&p, &fault, during, WAIT, &["full", "space"]).await;
        assert_eq!(s.offset, Some(Position::new(2)), "{s:?}");
        stop_and_run_again(&p, during).await;
        std::fs::remove_file(&filler).unwrap();

        let s = catch_up_and_stop(&p, "catch-up after space is freed", fold.events()).await;
        assert_eq!(s.skipped, 0, "{s:?}");
        assert_totals(&store, &fold, "exactly once after disk full").await;
        assert_eq!(
            blob_count(&store).await,
            i64::try_from(fold.events()).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full_at_commit_restarts_and_catches_up_exactly_once() {
    disk_full("full-commit", "4m", 16 * 1024, 3, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk_full_inside_the_handler_restarts_instead_of_skipping() {
    // A page cache of 16 pages (`PRAGMA cache_size`) and 64 KiB per event:
    // the handler's INSERT spills dirty pages to the write-ahead log and
    // itself hits the full disk (SQLITE_FULL inside `SqliteHandler::handle`).
    disk_full("full-handler", "4m", 64 * 1024, 3, Some(16)).await;
}

/// `chattr +i` on the file (and its write-ahead log), removed when dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Self {
        for p in &paths {
            let status = Command::new("chattr").arg("+i").arg(p).status().unwrap();
            assert!(status.success(), "chattr +i {p:?} (needs root)");
        }
        Immutable(paths)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn immutable_file_restarts_and_catches_up_exactly_once() {
    let (dir, read, store, log, mut fold) = setup(true, &[1, 2]).await;
    let p = restarting(
        "immutable",
        log.clone(),
        store.clone().exactly_once(Faulty::default()),
    )
    .build()
    .unwrap();
    p.run().await;
    wait_offset(&p, "first events", 2).await;

    let wal = dir.path().join("read.db-wal");
    let immutable = Immutable::set(vec![read.clone(), wal]);
    append(&log, &mut fold, "a", &[3, 4]).await;
    let during = "on an immutable file";
    restarts_on(
        &p,
        "the read-only file",
        during,
        WAIT,
        &[
            "readonly",
            "read-only",
            "i/o",
            "permission",
            "not permitted",
        ],
    )
    .await;
    stop_and_run_again(&p, during).await;
    drop(immutable);

    let s = catch_up_and_stop(&p, "catch-up once writable", 4).await;
    assert_eq!(s.skipped, 0, "{s:?}");
    assert_totals(&store, &fold, "exactly once after read-only").await;
}

// ---------------------------------------------------------------------------
// 4. rebuild() while another instance holds the lease; stop() during a
//    blocking handler.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebuild_waits_for_the_lease_and_resets_only_once_it_holds_it() {
    let (_dir, read, store, log, mut fold) = setup(true, &[1, 2]).await;
    let lease = SqliteLease::new(&read)
        .ttl(LEASE_TTL)
        .retry_interval(Duration::from_millis(20));
    let make = || {
        builder(
            "rebuilt",
            log.clone(),
            store.clone().exactly_once(Faulty::default()),
        )
        .lease(lease.clone())
        .build()
        .unwrap()
    };
    let (p1, p2) = (make(), make());
    p1.run().await;
    wait_offset(&p1, "holder handles", 2).await;
    p2.run().await;
    wait(&p2, "second waits", WAIT, |s| {
        s.phase == Phase::WaitingForLease
    })
    .await;

    prompt(
        "rebuild() while another instance holds the lease",
        p2.rebuild(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s2 = p2.state().await;
    assert_eq!(s2.phase, Phase::WaitingForLease, "{s2:?}");
    assert_eq!(s2.handled, 0, "{s2:?}");
    append(&log, &mut fold, "a", &[3]).await;
    wait_offset(&p1, "holder goes on", 3).await;
    assert_totals(
        &store,
        &fold,
        "the waiting rebuild touched the holder's read model",
    )
    .await;
    assert_eq!(p1.state().await.skipped, 0);

    prompt("stop() of the holder", p1.stop()).await;
    let s2 = wait(&p2, "rebuild after takeover", WAIT, |s| {
        s.handled == 3 && s.offset == Some(Position::new(3))
    })
    .await;
    assert!(s2.last_error.is_none(), "{s2:?}");
    prompt("stop()", p2.stop()).await;
    assert_totals(&store, &fold, "rebuilt from zero, once").await;
}

type BlockingProjection = Projection<MemoryEventLog, SerdeJson, SqliteExactlyOnce<Faulty>>;

/// A projection `name` whose handler blocks for 4 s at position 3, stopped
/// (promptly) while it blocks, after positions 1 and 2 were committed.
async fn stopped_during_a_blocking_handler(
    name: &str,
) -> (
    tempfile::TempDir,
    SqliteOffsetStore,
    MemoryEventLog,
    Fold,
    BlockingProjection,
) {
    let (dir, _read, store, log, mut fold) = setup(true, &[1, 2]).await;
    let entered = Arc::new(AtomicBool::new(false));
    let handler = Faulty {
        block: Some((3, Duration::from_secs(4))),
        entered: entered.clone(),
        ..Faulty::default()
    };
    let p = builder(name, log.clone(), store.clone().exactly_once(handler))
        .lease(InProcessLease::default())
        .build()
        .unwrap();
    p.run().await;
    wait_offset(&p, "first events", 2).await;
    append(&log, &mut fold, "a", &[3]).await;
    poll_until("the handler did not block", || {
        entered.load(Ordering::SeqCst)
    })
    .await;
    prompt("state() during a blocking handler", p.state()).await;
    prompt("stop() during a blocking handler", p.stop()).await;
    (dir, store, log, fold, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_during_a_blocking_handler_returns_and_the_next_run_is_exact() {
    let (_dir, store, log, mut fold, p) = stopped_during_a_blocking_handler("blocking").await;
    let s = p.state().await;
    assert_eq!((s.phase, s.running), (Phase::Stopped, false), "{s:?}");
    p.run().await;
    append(&log, &mut fold, "a", &[4]).await;
    wait_offset(&p, "next run", 4).await;
    prompt("stop()", p.stop()).await;
    assert_totals(&store, &fold, "exactly once across stop()").await;
}

/// `Projection::hand_to_sink` drops a transactional batch that has not
/// finished `STOP_GRACE` after a stop, which rolls its transaction back:
/// after `stop()` returns, the read model and the offset no longer move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_during_a_blocking_handler_leaves_no_commit_behind() {
    let (_dir, store, _log, _fold, p) =
        stopped_during_a_blocking_handler("no-commit-after-stop").await;
    let stopped = p.state().await;
    assert_eq!(stopped.offset, Some(Position::new(2)), "{stopped:?}");
    // Waits for the store's connection, i.e. for the abandoned batch.
    let stored = store.load("no-commit-after-stop").await.unwrap();
    let totals = sq::totals(&store).await;
    assert_eq!(
        (stored, totals["a"]),
        (Some(Position::new(2)), (3, 2, 2)),
        "the batch abandoned by stop() committed after stop() returned"
    );
}
