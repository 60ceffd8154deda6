//! Exactly once under SIGKILL: a child process runs a PostgreSQL projection
//! (`eventsourced-postgres` event log, PostgreSQL offset store and
//! advisory-lock lease, read model in the log's schema, unique per run) while this process keeps appending events; the child is
//! killed with SIGKILL at random moments and restarted. Finally the read model
//! must equal a fold over the whole log: no event counted twice or missed.
//!
//! The test binary runs without the libtest harness: started with
//! `PROJECTION_KILL_CHILD=<schema>` it is the projection child.

mod support;

use eventsourced::{EventLog, Position, SerdeJson};
use eventsourced_postgres::{PostgresConfig, PostgresEventLog};
use eventsourced_projection::{
    LagSource, Projection,
    postgres::{PostgresLag, PostgresLease, PostgresOffsetStore},
};
use futures::StreamExt;
use rand::Rng;
use std::{
    collections::HashMap,
    io::Read,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use support::pg;

const CHILD_ENV: &str = "PROJECTION_KILL_CHILD";
const TYPE_NAME: &str = "counter";
const KILLS: usize = 12;
const ENTITIES: usize = 8;
const TEST_NAME: &str = "read_model_equals_a_fold_over_the_log_after_sigkills";

fn main() {
    if let Ok(schema) = std::env::var(CHILD_ENV) {
        child(&schema);
        return;
    }
    // Behave like a libtest binary for `--list` and name filters.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out");
        return;
    }
    let started = Instant::now();
    println!("\nrunning 1 test");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), parent())
            .await
            .expect("the test took more than 120 s")
    });
    println!(
        "test {TEST_NAME} ... ok ({:.1} s)\n\ntest result: ok. 1 passed; 0 failed",
        started.elapsed().as_secs_f64()
    );
}

/// The projection process: runs until killed (or until its stdin closes,
/// i.e. the parent is gone).
fn child(schema: &str) {
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
    runtime.block_on(async {
        let log = event_log(schema).await;
        let store = PostgresOffsetStore::for_log(&log).expect("schema");
        let lease = PostgresLease::for_log(&log).retry_interval(Duration::from_millis(20));
        let projection = Projection::builder(
            projection_name(schema),
            TYPE_NAME,
            log,
            SerdeJson,
            store.exactly_once(pg::PgTotals::new(schema)),
        )
        .batch_size(rand::rng().random_range(1..=50))
        .max_wait(Duration::from_millis(2))
        .lease(lease)
        .restart_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
        .expect("projection");
        projection.run().await;
        std::future::pending::<()>().await;
    });
}

/// The workspace's PostgreSQL event log, with its tables in `schema`.
async fn event_log(schema: &str) -> PostgresEventLog {
    let mut config = PostgresConfig::from_url(&support::database_url()).expect("DATABASE_URL");
    config.schema = schema.to_owned();
    let log = PostgresEventLog::new(config)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is required for this test: {e}"));
    log.setup().await.expect("set up the event log");
    log
}

fn spawn_child(schema: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .env(CHILD_ENV, schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the projection child")
}

/// The lease key is the name: a name per run keeps parallel runs apart.
fn projection_name(schema: &str) -> String {
    format!("killed-totals-{schema}")
}

async fn offset(store: &PostgresOffsetStore, schema: &str) -> Option<Position> {
    use eventsourced_projection::OffsetStore;
    store
        .load(&projection_name(schema))
        .await
        .expect("load offset")
}

async fn parent() {
    let pool = pg::pool().await;
    let schema = pg::schema(&pool, "proj_kill").await;
    let log = event_log(&schema).await;
    let store = PostgresOffsetStore::for_log(&log).expect("schema");
    store.setup().await.expect("setup");

    // Writers: entities keep appending (values may be negative) until told to stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut writers = Vec::new();
    for w in 0..ENTITIES {
        let (log, stop) = (log.clone(), stop_rx.clone());
        writers.push(tokio::spawn(async move {
            let id = format!("counter-{w}");
            let mut appended = 0u64;
            while !*stop.borrow() {
                let n = rand::rng().random_range(1..=4);
                let values: Vec<i64> = (0..n).map(|_| rand::rng().random_range(-5..=20)).collect();
                support::append(&log, TYPE_NAME, &id, &values).await;
                appended += n;
                let pause = Duration::from_millis(rand::rng().random_range(20..50));
                tokio::time::sleep(pause).await;
            }
            appended
        }));
    }

    let mut progress = Vec::new();
    for round in 0..KILLS {
        let mut child = spawn_child(&schema);
        let before = offset(&store, &schema).await;
        let alive = rand::rng().random_range(150..1200);
        tokio::time::sleep(Duration::from_millis(alive)).await;
        child.kill().expect("SIGKILL the child");
        let status = child.wait().expect("wait for the child");
        let after = offset(&store, &schema).await;
        println!(
            "round {round}: killed after {alive} ms ({status}); offset {before:?} -> {after:?}"
        );
        progress.push((before, after));
    }
    stop_tx.send_replace(true);
    let mut appended = 0;
    for w in writers {
        appended += w.await.expect("writer");
    }

    // A last child catches up with the whole log.
    let mut child = spawn_child(&schema);
    let caught_up = async {
        loop {
            let totals = pg::totals(&pool, &schema).await;
            let handled: i64 = totals.values().map(|t| t.1).sum();
            if u64::try_from(handled).unwrap_or(0) >= appended {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let done = tokio::time::timeout(Duration::from_secs(60), caught_up).await;
    child.kill().expect("kill the last child");
    child.wait().expect("wait for the last child");
    done.expect("the projection did not catch up with the log within 60 s");

    // The fold over the whole log.
    let mut expected: HashMap<String, (i64, i64, i64)> = HashMap::new();
    for w in 0..ENTITIES {
        let id = format!("counter-{w}");
        let events: Vec<_> = log
            .events_by_id(TYPE_NAME, &id, eventsourced::SeqNo::new(1))
            .collect()
            .await;
        for event in events {
            let (seq_no, bytes) = event.expect("read the log");
            let value: i64 = eventsourced::Binarize::decode(&SerdeJson, bytes).expect("decode");
            let entry = expected.entry(id.clone()).or_default();
            entry.0 += value;
            entry.1 += 1;
            entry.2 = seq_no.to_i64().expect("small");
        }
    }
    let totals = pg::totals(&pool, &schema).await;
    assert_eq!(
        pg::gaps(&pool, &schema).await,
        0,
        "an event was handled twice or out of order"
    );
    assert_eq!(
        totals, expected,
        "the read model differs from the fold over the log"
    );
    let events: i64 = expected.values().map(|t| t.1).sum();
    assert_eq!(u64::try_from(events).unwrap(), appended);
    // Lag from the log's table: none after the catch-up, everything from zero.
    let lag = PostgresLag::for_log(&log);
    let final_offset = offset(&store, &schema).await;
    assert_eq!(
        lag.events_after(TYPE_NAME, final_offset)
            .await
            .expect("lag"),
        0
    );
    assert_eq!(
        lag.events_after(TYPE_NAME, None).await.expect("lag"),
        appended
    );
    let moved = progress.iter().filter(|(b, a)| a > b).count();
    println!("{appended} events, {KILLS} kills, {moved} rounds made progress before the kill");
    assert!(
        moved > 0,
        "no round made progress: the children never handled events"
    );
}
