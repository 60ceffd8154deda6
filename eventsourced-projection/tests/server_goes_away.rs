//! Projections while the server goes away: PostgreSQL connections of the log,
//! the offset store / transactional sink and the lease are terminated again
//! and again (`pg_terminate_backend`) while events are appended; afterwards
//! the projection must catch up on its own, exactly once (transactional sink)
//! or at least once without gaps (offset store + in-memory handler). While the
//! server does not answer at all (a TCP proxy that stops relaying), `state()`
//! and `stop()` must return promptly. Needs DATABASE_URL.
#![cfg(feature = "postgres")]

mod support;

use deadpool_postgres::{Manager, Pool};
use eventsourced::{Binarize, Position, SerdeJson};
use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
use eventsourced_projection::{
    AtLeastOnce, ErrorStrategy, HandlerError, LastError, Phase, ProjectedEvent, Projection,
    ProjectionBuilder, ProjectionSink, ProjectionState,
    postgres::{PostgresHandler, PostgresLag, PostgresLease, PostgresOffsetStore},
};
use rand::Rng;
use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use support::{Recorder, append, pg, unique};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::Notify,
    task::JoinHandle,
};
use tokio_postgres::NoTls;

const TYPE_NAME: &str = "counter";
/// How long connections are terminated in cases 1 and 2.
const OUTAGE: Duration = Duration::from_secs(4);
/// How long the projection may take to catch up once the terminations end.
const CATCH_UP: Duration = Duration::from_secs(30);
/// "Promptly" for `state()` and `stop()` while the server does not answer.
const PROMPT: Duration = Duration::from_secs(8);

/// A PostgreSQL event log in `schema` whose connections carry `app`; through
/// `port` if given (the proxy), else straight to DATABASE_URL.
async fn event_log(schema: &str, app: &str, port: Option<u16>) -> PostgresEventLog {
    let mut config = PostgresConfig::from_url(&support::database_url()).expect("DATABASE_URL");
    config.schema = schema.to_owned();
    config.application_name = app.to_owned();
    config.poll_interval = Duration::from_millis(50);
    config.statement_timeout = Duration::from_secs(2);
    config.connect_timeout = Duration::from_secs(2);
    if let Some(port) = port {
        config.host = "127.0.0.1".to_owned();
        config.port = port;
    }
    let log = PostgresEventLog::new(config)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is required: {e}"));
    log.setup().await.expect("set up the event log");
    log
}

fn pg_config(app: &str) -> tokio_postgres::Config {
    let mut config: tokio_postgres::Config = support::database_url().parse().expect("DATABASE_URL");
    config.application_name(app);
    config.connect_timeout(Duration::from_secs(2));
    config
}

/// A pool whose connections carry `app`.
fn named_pool(app: &str) -> Pool {
    Pool::builder(Manager::new(pg_config(app), NoTls))
        .max_size(4)
        .build()
        .expect("pool")
}

/// Terminates every connection whose application_name is in `apps`, every
/// 150..400 ms, until `stop`; returns how many it terminated.
fn terminator(apps: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let (client, connection) = pg_config("sga_terminator")
            .connect(NoTls)
            .await
            .expect("terminator connects");
        tokio::spawn(connection);
        let mut killed = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let n: i64 = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE application_name = ANY($1) AND pid <> pg_backend_pid()",
                    &[&apps],
                )
                .await
                .expect("terminate")
                .get(0);
            killed += u64::try_from(n).unwrap_or(0);
            let pause = rand::rng().random_range(150..400);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        killed
    })
}

/// Appends one event of value 1..=9 to one of five entities every few ms
/// until `stop`; returns how many appends succeeded.
fn appender(writer: PostgresEventLog, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let (id, value) = {
                let mut rng = rand::rng();
                (
                    format!("e{}", rng.random_range(0..5)),
                    rng.random_range(1..10i64),
                )
            };
            append(&writer, TYPE_NAME, &id, &[value]).await;
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        n
    })
}

/// What the log holds: per id (sum, count, last seq_no), and the last position.
async fn log_totals(
    admin: &Pool,
    log: &PostgresEventLog,
) -> (BTreeMap<String, (i64, i64, i64)>, Option<Position>) {
    let client = admin.get().await.expect("admin connection");
    let rows = client
        .query(
            &format!(
                "SELECT position, id, seq_no, event FROM {} WHERE type_name = $1 ORDER BY position",
                log.tables().events()
            ),
            &[&TYPE_NAME],
        )
        .await
        .expect("read the log");
    let mut totals = BTreeMap::new();
    let mut last = None;
    for row in rows {
        let position: i64 = row.get(0);
        let id: String = row.get(1);
        let seq_no: i64 = row.get(2);
        let event: Vec<u8> = row.get(3);
        let value: i64 = SerdeJson.decode(bytes::Bytes::from(event)).expect("decode");
        let entry = totals.entry(id).or_insert((0, 0, 0));
        entry.0 += value;
        entry.1 += 1;
        entry.2 = seq_no;
        last = Position::from_i64(position);
    }
    (totals, last)
}

/// Records every state the projection passes through, until `timeout`.
fn record_states<L, B, S>(
    p: &Projection<L, B, S>,
    timeout: Duration,
) -> (Arc<Mutex<Vec<ProjectionState>>>, JoinHandle<()>)
where
    L: eventsourced::EventLog + Send + Sync + 'static,
    S: eventsourced_projection::ProjectionSink + Send + 'static,
    B: Binarize<S::Event> + Send + Sync + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let p = p.clone();
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        p.wait_for(
            |s| {
                sink.lock().expect("lock").push(s.clone());
                false
            },
            timeout,
        )
        .await;
    });
    (seen, task)
}

fn errors_of(states: &[ProjectionState]) -> Vec<LastError> {
    let mut errors: Vec<LastError> = Vec::new();
    for e in states.iter().filter_map(|s| s.last_error.clone()) {
        if errors.last() != Some(&e) {
            errors.push(e);
        }
    }
    errors
}

/// What cases 1 and 2 run on, in a fresh schema `prefix_…`: the projection's
/// log, offset store and lease, each on connections of its own
/// application_name (in `apps`, for the [`terminator`]), a writer's log that
/// is not terminated, and an admin pool.
struct Terminated {
    admin: Pool,
    schema: String,
    log: PostgresEventLog,
    writer: PostgresEventLog,
    store: PostgresOffsetStore,
    lease: PostgresLease,
    apps: Vec<String>,
}

async fn terminated(prefix: &str) -> Terminated {
    let admin = pg::pool().await;
    let schema = pg::schema(&admin, prefix).await;
    let tag = unique("sga");
    let (log_app, sink_app, lease_app, writer_app) = (
        format!("{tag}_log"),
        format!("{tag}_sink"),
        format!("{tag}_lease"),
        format!("{tag}_writer"),
    );
    let log = event_log(&schema, &log_app, None).await;
    let writer = event_log(&schema, &writer_app, None).await;
    let store = PostgresOffsetStore::new(named_pool(&sink_app), &schema).expect("schema");
    store.setup().await.expect("setup");
    let lease = PostgresLease::new(pg_config(&lease_app))
        .retry_interval(Duration::from_millis(50))
        .check_interval(Duration::from_millis(100));
    Terminated {
        admin,
        schema,
        log,
        writer,
        store,
        lease,
        apps: vec![log_app, sink_app, lease_app],
    }
}

/// The outage of cases 1 and 2: for [`OUTAGE`], the connections of `apps`
/// are terminated while `writer` appends; returns how many connections were
/// terminated and how many events appended.
async fn outage(apps: Vec<String>, writer: &PostgresEventLog) -> (u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let killer = terminator(apps, stop.clone());
    let appends = appender(writer.clone(), stop.clone());
    tokio::time::sleep(OUTAGE).await;
    stop.store(true, Ordering::SeqCst);
    let killed = killer.await.expect("terminator");
    let appended = appends.await.expect("appender");
    (killed, appended)
}

/// A projection `name` of `sink` over `log`: batches of `batch_size` at
/// most, quick restarts.
fn builder<S>(
    name: String,
    log: PostgresEventLog,
    sink: S,
    batch_size: usize,
    lease: PostgresLease,
) -> ProjectionBuilder<PostgresEventLog, SerdeJson, S>
where
    S: ProjectionSink<Event = i64>,
{
    Projection::builder(name, TYPE_NAME, log, SerdeJson, sink)
        .batch_size(batch_size)
        .max_wait(Duration::from_millis(5))
        .lease(lease)
        .restart_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Prints the first `n` of the distinct `errors`.
fn print_errors(errors: &[LastError], n: usize) {
    println!("distinct last_errors seen: {}", errors.len());
    for e in errors.iter().take(n) {
        println!("  {:?} attempts={} {}", e.action, e.attempts, e.message);
    }
}

/// Case 1: the transactional sink under terminations, with `strategy` for
/// handler errors.
async fn exactly_once_under_terminations(strategy: ErrorStrategy, prefix: &str) {
    let t = terminated(prefix).await;
    let (admin, schema, log, writer, store) = (t.admin, t.schema, t.log, t.writer, t.store);
    let p = builder(
        unique("once"),
        log.clone(),
        store.clone().exactly_once(pg::PgTotals::new(&schema)),
        7,
        t.lease,
    )
    .error_strategy(strategy)
    .build()
    .expect("projection");
    for i in 0..5 {
        append(&writer, TYPE_NAME, &format!("e{i}"), &[1, 2]).await;
    }
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(10)), CATCH_UP)
        .await
        .expect("catches up before the outage");

    let (states, recorder) = record_states(&p, OUTAGE + CATCH_UP);
    let (killed, appended) = outage(t.apps, &writer).await;
    let during = p.state().await;
    // One more after the outage: the projection must be live again.
    append(&writer, TYPE_NAME, "e0", &[100]).await;
    let (expected, last) = log_totals(&admin, &writer).await;
    println!(
        "case 1 ({strategy:?}): {killed} connections terminated, {appended} events appended during the outage, log ends at {last:?}"
    );
    println!("state right after the outage: {during:?}");
    let caught_up = p.wait_for(|s| s.offset == last, CATCH_UP).await;
    let end = p.state().await;
    let errors = errors_of(&states.lock().expect("lock"));
    recorder.abort();
    print_errors(&errors, 6);
    let totals: BTreeMap<_, _> = pg::totals(&admin, &schema).await.into_iter().collect();
    let gaps = pg::gaps(&admin, &schema).await;
    p.stop().await;
    assert!(
        killed > 0,
        "the terminator must have terminated connections"
    );
    assert!(
        caught_up.is_some(),
        "the projection did not catch up to {last:?} within {CATCH_UP:?} after the outage: {end:?}"
    );
    assert_eq!(
        totals, expected,
        "read model (sum, count, last seq_no) per id"
    );
    assert_eq!(gaps, 0, "events handled twice or out of order");
    assert!(end.running && end.phase == Phase::Running, "{end:?}");
    assert!(
        !errors.is_empty(),
        "last_error must have shown the cause during the outage"
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.message.is_empty() && e.message.len() < 2000),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| {
            let m = e.message.to_lowercase();
            m.contains("terminat") || m.contains("connection") || m.contains("closed")
        }),
        "no last_error names the lost connection: {errors:?}"
    );
}

/// Case 1 with the default error strategy (`Stop`, meant for handler bugs):
/// a terminated connection is not a handler bug.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_catches_up_after_terminated_connections() {
    exactly_once_under_terminations(ErrorStrategy::Stop, "sga_once").await;
}

/// Case 1 with `Skip`: a terminated connection must not make an event count
/// as skipped (and so be missing from the read model).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_once_with_skip_loses_no_event_to_terminated_connections() {
    exactly_once_under_terminations(ErrorStrategy::Skip, "sga_skip").await;
}

/// Case 2: an in-memory handler with a PostgreSQL offset store: every event
/// at least once, none skipped, offsets never backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_least_once_handles_every_event_after_terminated_connections() {
    let t = terminated("sga_alo").await;
    let (admin, schema, log, writer, store) = (t.admin, t.schema, t.log, t.writer, t.store);
    let recorder = Recorder::default();
    let name = unique("alo");
    let p = builder(
        name.clone(),
        log.clone(),
        AtLeastOnce::new(store.clone(), recorder.clone()),
        5,
        t.lease,
    )
    .build()
    .expect("projection");
    p.run().await;

    let (states, state_task) = record_states(&p, OUTAGE + CATCH_UP);
    // The stored offset, read now and then through a connection of our own.
    let stored = Arc::new(Mutex::new(Vec::<i64>::new()));
    let watching = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stored, watching, admin, schema, name) = (
            stored.clone(),
            watching.clone(),
            admin.clone(),
            schema.clone(),
            name.clone(),
        );
        tokio::spawn(async move {
            let client = admin.get().await.expect("admin");
            let sql = format!("SELECT position FROM {schema}.projection_offsets WHERE name = $1");
            while !watching.load(Ordering::SeqCst) {
                if let Ok(Some(row)) = client.query_opt(&sql, &[&name]).await {
                    stored.lock().expect("lock").push(row.get(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (killed, appended) = outage(t.apps, &writer).await;
    append(&writer, TYPE_NAME, "e0", &[100]).await;
    let (_, last) = log_totals(&admin, &writer).await;
    println!(
        "case 2: {killed} connections terminated, {appended} events appended, log ends at {last:?}"
    );
    let caught_up = p.wait_for(|s| s.offset == last, CATCH_UP).await;
    let end = p.state().await;
    watching.store(true, Ordering::SeqCst);
    watcher.await.expect("watcher");
    state_task.abort();
    p.stop().await;

    let errors = errors_of(&states.lock().expect("lock"));
    print_errors(&errors, 4);
    assert!(killed > 0);
    assert!(caught_up.is_some(), "did not catch up to {last:?}: {end:?}");
    assert!(end.running && end.phase == Phase::Running, "{end:?}");
    let handled: Vec<u64> = recorder.seen().positions();
    let distinct: HashSet<u64> = handled.iter().copied().collect();
    let last = last.expect("events").get();
    let missing: Vec<u64> = (1..=last).filter(|p| !distinct.contains(p)).collect();
    assert!(missing.is_empty(), "events never handled: {missing:?}");
    println!(
        "handled {} times for {} events ({} redeliveries)",
        handled.len(),
        last,
        handled.len() as u64 - last
    );
    let state_offsets: Vec<u64> = states
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|s| s.offset.map(Position::get))
        .collect();
    assert!(
        state_offsets.windows(2).all(|w| w[0] <= w[1]),
        "the state's offset went backwards: {state_offsets:?}"
    );
    let stored = stored.lock().expect("lock").clone();
    assert!(
        stored.windows(2).all(|w| w[0] <= w[1]),
        "the stored offset went backwards: {stored:?}"
    );
    assert!(!errors.is_empty(), "last_error must show the outage");
}

/// A TCP proxy to the PostgreSQL server that can stop relaying bytes (the
/// connections stay open): a server that does not answer.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn proxy() -> Proxy {
    let upstream = PostgresConfig::from_url(&support::database_url()).expect("DATABASE_URL");
    let upstream = format!("{}:{}", upstream.host, upstream.port);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let frozen = Arc::new(AtomicBool::new(false));
    let flag = frozen.clone();
    let task = tokio::spawn(async move {
        let mut relays = tokio::task::JoinSet::new();
        while let Ok((inbound, _)) = listener.accept().await {
            let (frozen, upstream) = (flag.clone(), upstream.clone());
            relays.spawn(async move {
                let Ok(outbound) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::join!(relay(ri, wo, frozen.clone()), relay(ro, wi, frozen));
            });
        }
    });
    Proxy { port, frozen, task }
}

/// Lets a test stop the handler at one position until it says go.
#[derive(Clone)]
struct Gate {
    inner: pg::PgTotals,
    at: u64,
    entered: Arc<Notify>,
    go: Arc<Notify>,
}

impl PostgresHandler for Gate {
    type Event = i64;

    async fn handle(
        &mut self,
        tx: &eventsourced_projection::postgres::tokio_postgres::Transaction<'_>,
        e: &ProjectedEvent<i64>,
    ) -> Result<(), HandlerError> {
        if e.position.get() == self.at {
            self.entered.notify_one();
            self.go.notified().await;
        }
        self.inner.handle(tx, e).await
    }
}

type GatedProjection = Projection<
    PostgresEventLog,
    SerdeJson,
    eventsourced_projection::postgres::PostgresExactlyOnce<Gate>,
>;

/// A projection whose log, offset store and lease all go through `proxy`.
async fn proxied_projection(
    proxy: &Proxy,
    prefix: &str,
    gate_at: u64,
    with_lag: bool,
) -> (GatedProjection, PostgresEventLog, Gate, Pool, String) {
    let admin = pg::pool().await;
    let schema = pg::schema(&admin, prefix).await;
    let tag = unique("sga");
    let log = event_log(&schema, &format!("{tag}_log"), Some(proxy.port)).await;
    let writer = event_log(&schema, &format!("{tag}_writer"), None).await;
    let store = PostgresOffsetStore::for_log(&log).expect("schema");
    store.setup().await.expect("setup");
    let gate = Gate {
        inner: pg::PgTotals::new(&schema),
        at: gate_at,
        entered: Arc::default(),
        go: Arc::default(),
    };
    let lease = PostgresLease::for_log(&log)
        .retry_interval(Duration::from_millis(50))
        .check_interval(Duration::from_millis(200));
    let mut builder = builder(
        unique(prefix),
        log.clone(),
        store.exactly_once(gate.clone()),
        10,
        lease,
    );
    if with_lag {
        builder = builder.lag_source(PostgresLag::for_log(&log));
    }
    let p = builder.build().expect("projection");
    append(&writer, TYPE_NAME, "a", &[1, 2, 3]).await;
    p.run().await;
    p.wait_for(|s| s.offset == Some(Position::new(3)), CATCH_UP)
        .await
        .expect("runs through the proxy");
    (p, writer, gate, admin, schema)
}

/// Case 3a: `state()` (with a PostgreSQL lag source) while the server does
/// not answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn state_returns_promptly_while_the_server_does_not_answer() {
    let proxy = proxy().await;
    let (p, writer, _gate, _admin, _schema) = proxied_projection(&proxy, "sga_st", 0, true).await;
    assert_eq!(p.state().await.lag, Some(0));
    proxy.frozen.store(true, Ordering::SeqCst);
    append(&writer, TYPE_NAME, "a", &[4]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let state = tokio::time::timeout(PROMPT, p.state()).await;
    let took = started.elapsed();
    println!("state() during the freeze: {took:?} {state:?}");
    proxy.frozen.store(false, Ordering::SeqCst);
    let stopped = tokio::time::timeout(Duration::from_secs(30), p.stop()).await;
    assert!(
        state.is_ok(),
        "state() did not return within {PROMPT:?} while the server does not answer"
    );
    assert!(stopped.is_ok(), "stop() after the freeze");
}

/// Case 3b: `stop()` while the projection follows the log and the server
/// stops answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_returns_promptly_while_following_and_the_server_does_not_answer() {
    let proxy = proxy().await;
    let (p, writer, _gate, _admin, _schema) = proxied_projection(&proxy, "sga_sf", 0, false).await;
    proxy.frozen.store(true, Ordering::SeqCst);
    append(&writer, TYPE_NAME, "a", &[4]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = tokio::time::timeout(PROMPT, p.state()).await;
    println!("state during the freeze: {during:?}");
    let started = Instant::now();
    let stopped = tokio::time::timeout(PROMPT, p.stop()).await;
    let took = started.elapsed();
    println!("stop() during the freeze took {took:?}");
    proxy.frozen.store(false, Ordering::SeqCst);
    let end = p.state().await;
    assert!(during.is_ok(), "state() hung");
    assert!(
        stopped.is_ok(),
        "stop() did not return within {PROMPT:?} while the server does not answer: {end:?}"
    );
    assert!(!end.running, "{end:?}");
}

/// Case 3c: `stop()` while a batch is in its transaction and the server stops
/// answering: the batch must roll back (or fail) and the task end promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_returns_promptly_while_a_batch_is_in_flight_and_the_server_does_not_answer() {
    let proxy = proxy().await;
    let (p, writer, gate, admin, schema) = proxied_projection(&proxy, "sga_sb", 4, false).await;
    append(&writer, TYPE_NAME, "a", &[4]).await;
    tokio::time::timeout(CATCH_UP, gate.entered.notified())
        .await
        .expect("the handler reaches event 4");
    proxy.frozen.store(true, Ordering::SeqCst);
    gate.go.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(PROMPT, p.stop()).await;
    let took = started.elapsed();
    let during = p.state().await;
    println!("stop() with a batch in flight took {took:?}; state {during:?}");
    proxy.frozen.store(false, Ordering::SeqCst);
    if stopped.is_err() {
        // Let the stuck task finish now that the server answers again.
        let _ = tokio::time::timeout(Duration::from_secs(30), p.stop()).await;
    }
    let totals = pg::totals(&admin, &schema).await;
    println!("read model afterwards: {totals:?}");
    assert!(
        stopped.is_ok(),
        "stop() did not return within {PROMPT:?} while a batch waits on a server that does not answer: {during:?}"
    );
    assert!(!p.state().await.running);
    let a = totals["a"];
    assert!(a == (6, 3, 3) || a == (10, 4, 4), "{a:?}");
    assert_eq!(pg::gaps(&admin, &schema).await, 0);
}

/// Appends `values` to `id` once the log answers again (retried while the
/// server restarts; an append that failed is checked before it is retried).
#[cfg(feature = "nats")]
async fn append_when_up(log: &eventsourced_nats::NatsEventLog, id: &str, values: &[i64]) {
    use eventsourced::EventLog;
    let deadline = Instant::now() + CATCH_UP;
    loop {
        assert!(Instant::now() < deadline, "the NATS log does not come back");
        let last =
            tokio::time::timeout(Duration::from_secs(2), log.last_seq_no(TYPE_NAME, id)).await;
        let Ok(Ok(last)) = last else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let events: Vec<_> = values
            .iter()
            .map(|v| SerdeJson.encode(v).expect("encode"))
            .collect();
        match tokio::time::timeout(
            Duration::from_secs(5),
            log.append(TYPE_NAME, id, last, &events),
        )
        .await
        {
            Ok(Ok(_)) => return,
            other => {
                println!("append retried: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Case 4: a projection over the NATS log (memory offsets) while nats-server
/// is killed and restarted: afterwards every event exactly once, in order.
#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_projection_catches_up_exactly_once_after_the_server_restarts() {
    use eventsourced_nats::{NatsConfig, NatsEventLog};
    use eventsourced_projection::{InProcessLease, MemoryOffsetStore};
    let mut server = support::nats::TestServer::start(&[]);
    let name = unique("sga");
    let mut config = NatsConfig::from_url(&server.url());
    config.stream = name.clone();
    config.subject_prefix = name.clone();
    let log = NatsEventLog::new(config)
        .await
        .expect("connect to nats-server");
    log.setup().await.expect("create the stream");
    let recorder = Recorder::default();
    let p = Projection::builder(
        name,
        TYPE_NAME,
        log.clone(),
        SerdeJson,
        AtLeastOnce::new(MemoryOffsetStore::default(), recorder.clone()),
    )
    .batch_size(3)
    .max_wait(Duration::from_millis(5))
    .lease(InProcessLease::default())
    .restart_backoff(Duration::from_millis(20), Duration::from_millis(500))
    .build()
    .expect("projection");
    let mut expected = Vec::new();
    for i in 0..4i64 {
        append_when_up(&log, "a", &[i, i + 10]).await;
        expected.extend([("a".to_owned(), i), ("a".to_owned(), i + 10)]);
    }
    p.run().await;
    p.wait_for(|s| s.handled == 8, CATCH_UP)
        .await
        .expect("handles before the restart");
    let (states, task) = record_states(&p, Duration::from_secs(120));
    for round in 0..2i64 {
        server.kill();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let started = Instant::now();
        let during = tokio::time::timeout(PROMPT, p.state()).await;
        println!(
            "round {round}: state() while nats-server is down ({:?}): {during:?}",
            started.elapsed()
        );
        assert!(during.is_ok(), "state() hung while nats-server is down");
        server.restart();
        for i in 0..3 {
            let v = 100 * (round + 1) + i;
            append_when_up(&log, "b", &[v]).await;
            expected.push(("b".to_owned(), v));
        }
    }
    let n = expected.len() as u64;
    let caught_up = p.wait_for(|s| s.handled >= n, CATCH_UP).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let end = p.state().await;
    task.abort();
    let errors = errors_of(&states.lock().expect("lock"));
    for e in errors.iter().take(4) {
        println!("  {:?} {}", e.action, e.message);
    }
    let stopped = tokio::time::timeout(PROMPT, p.stop()).await;
    assert!(caught_up.is_some(), "did not catch up: {end:?}");
    let seen = recorder.seen();
    let got: Vec<(String, i64)> = seen.events.iter().map(|e| (e.1.clone(), e.3)).collect();
    assert_eq!(got, expected, "every event exactly once, in order");
    let positions = seen.positions();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(end.running && end.phase == Phase::Running, "{end:?}");
    // async-nats reconnects underneath: the outage need not surface as an
    // error (observed: last_error stays None); not asserted.
    println!("last_errors during the NATS outages: {}", errors.len());
    assert!(stopped.is_ok(), "stop() hung");
}
