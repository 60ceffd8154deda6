//! Bad data and bad config: rows another program wrote into the log's tables
//! (negative, zero or NULL cells, gaps, duplicates, snapshots ahead of the
//! log, huge values), tables of another shape, out-of-range settings,
//! secrets, servers that never answer, and a server that refuses or kills
//! every connection for a while. Each read and write must end with a typed,
//! readable error naming what and where (or the right answer), within bounded
//! time, and the log must work again once the server does.

mod support;

use bytes::Bytes;
use eventsourced::testkit::counter::{Counter, Get, Increase};
use eventsourced::{
    EventLog, EventLogError, EventSourcedExt, Position, SeqNo, SerdeJson, SnapshotStore, SpawnError,
};
use eventsourced_postgres::{
    PostgresConfig, PostgresError, PostgresEventLog, PostgresSnapshotStore, TlsMode,
};
use futures::{StreamExt, TryStreamExt};
use std::time::{Duration, Instant};
use support::{TestDb, ev};
use tokio::time::timeout;

/// The longest any single call may take here before it counts as a hang.
const WAIT: Duration = Duration::from_secs(15);

/// An error and all its sources, joined by ` <- `.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        text.push_str(" <- ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// Runs `sql` on a plain connection, `{events}`, `{positions}` and
/// `{snapshots}` standing for the qualified table names.
async fn raw_sql(db: &TestDb, log: &PostgresEventLog, sql: &str) {
    let sql = sql
        .replace("{events}", &log.tables().events())
        .replace("{positions}", &log.tables().positions())
        .replace("{snapshots}", &log.tables().snapshots());
    db.raw()
        .await
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The counter event `Increased(n)` as `SerdeJson` writes it.
fn increased(n: u64) -> String {
    format!("'{{\"Increased\":{n}}}'::bytea")
}

/// A snapshot store on `log`'s schema, set up.
async fn set_up_store(log: &PostgresEventLog) -> PostgresSnapshotStore {
    let store = PostgresSnapshotStore::from_log(log);
    store.setup().await.expect("snapshot setup");
    store
}

/// A fresh schema with a log and a snapshot store on it, both set up.
async fn db_with_log_and_store() -> (TestDb, PostgresEventLog, PostgresSnapshotStore) {
    let db = TestDb::new();
    let log = db.log().await;
    let store = set_up_store(&log).await;
    (db, log, store)
}

/// The stored events of `type_name`/`id`, all of them.
async fn read_all(log: &PostgresEventLog, type_name: &str, id: &str) -> Vec<(SeqNo, Bytes)> {
    log.events_by_id(type_name, id, SeqNo::ZERO)
        .try_collect()
        .await
        .expect("read")
}

async fn spawn_counter(
    log: &PostgresEventLog,
    store: &PostgresSnapshotStore,
    id: &str,
) -> Result<eventsourced::EntityRef<Counter>, SpawnError> {
    timeout(
        WAIT,
        Counter::default()
            .entity()
            .spawn(id.to_owned(), log.clone(), store.clone(), SerdeJson),
    )
    .await
    .expect("spawn must not hang")
}

// ---------------------------------------------------------------------------
// 1. Rows written by another program
// ---------------------------------------------------------------------------

/// With the CHECK constraints gone (setup does not look at them), another
/// program stores a negative seq_no, a seq_no 0 and a negative position.
/// `last_seq_no`, `events_by_id`, `events_by_type` and spawning must report
/// `Corrupt`, naming the table, the entity and the offending value; none
/// may yield an event at seq_no 0 or silently skip a stored event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_and_zero_seq_nos_and_positions_are_corrupt() {
    let (db, log, store) = db_with_log_and_store().await;
    let table = log.tables().events();
    raw_sql(
        &db,
        &log,
        &format!(
            "ALTER TABLE {{events}} DROP CONSTRAINT events_seq_no_check,
                                    DROP CONSTRAINT events_position_check;
             INSERT INTO {{events}} VALUES (1001, 'counter', 'neg', -5, {});
             INSERT INTO {{events}} VALUES (1002, 'counter', 'zero', 0, {});
             INSERT INTO {{events}} VALUES (-7, 'negpos', 'p', 1, '\\x01');
             INSERT INTO {{events}} VALUES (1003, 'negseq', 'q', -9, '\\x02');
             INSERT INTO {{events}} VALUES (1004, 'zeroseq', 'z', 0, '\\x03');
             UPDATE {{positions}} SET last = 2000;",
            increased(1),
            increased(1)
        ),
    )
    .await;
    let mut failures = Vec::new();

    // A negative seq_no as the entity's last one.
    let last = timeout(WAIT, log.last_seq_no("counter", "neg"))
        .await
        .expect("last_seq_no must not hang");
    match &last {
        Err(EventLogError::Corrupt { location, reason, .. })
            if location.contains(&table) && location.contains("\"neg\"") => {}
        other => failures.push(format!(
            "last_seq_no of a row with seq_no -5: want Corrupt naming {table} and \"neg\", got {other:?}"
        )),
    }
    match spawn_counter(&log, &store, "neg").await {
        Err(SpawnError::ReadEvents {
            source: EventLogError::Corrupt { .. },
            ..
        }) => {}
        other => failures.push(format!(
            "spawn over seq_no -5: want ReadEvents(Corrupt), got {:?}",
            other.map(|_| "a running entity")
        )),
    }

    // seq_no 0 means "no event"; an event stored under it is corrupt.
    let zero = timeout(
        WAIT,
        log.events_by_id("counter", "zero", SeqNo::ZERO)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("events_by_id must not hang");
    if !matches!(zero.as_slice(), [Err(EventLogError::Corrupt { .. })]) {
        failures.push(format!(
            "events_by_id from 0 over an event with seq_no 0: want one Corrupt, got {zero:?}"
        ));
    }
    // events_by_type over a negative seq_no, a seq_no 0, a negative position.
    for (type_name, what, value) in [
        ("negseq", "seq_no", "1003"),
        ("zeroseq", "seq_no", "1004"),
        ("negpos", "position", "-7"),
    ] {
        let first = timeout(
            Duration::from_secs(3),
            Box::pin(log.events_by_type(type_name, Position::START)).next(),
        )
        .await;
        match first {
            Ok(Some(Err(EventLogError::Corrupt {
                location, reason, ..
            }))) if location.contains(&table)
                && (location.contains(value) || reason.contains(value)) => {}
            Ok(other) => failures.push(format!(
                "events_by_type({type_name}) over a bad {what}: want Corrupt naming {table} \
                 and the row's position {value}, got {other:?}"
            )),
            Err(_) => failures.push(format!(
                "events_by_type({type_name}) over a bad {what}: nothing within 3 s, the \
                 stored event is silently skipped (last_seq_no sees it: {:?})",
                log.last_seq_no(type_name, "p").await
            )),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A seq_no gap, a duplicated seq_no (once the primary key is gone) and a
/// snapshot ahead of the log stop the spawn with a typed error naming the
/// entity; rows of other entities whose type or id differ only in case or
/// spacing are not mixed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_duplicates_and_snapshots_ahead_stop_the_spawn() {
    let (db, log, store) = db_with_log_and_store().await;
    let (one, two, three) = (increased(1), increased(2), increased(3));
    raw_sql(
        &db,
        &log,
        &format!(
            "INSERT INTO {{events}} VALUES (1, 'counter', 'gap', 1, {one}),
                                           (2, 'counter', 'gap', 3, {three}),
                                           (3, 'counter', 'ahead', 1, {one}),
                                           (4, 'counter', 'ahead', 2, {two}),
                                           (5, 'counter', 'Mixed', 1, {three}),
                                           (6, 'Counter', 'mixed', 1, {three}),
                                           (7, 'counter', 'mixed ', 1, {three}),
                                           (8, 'counter', 'mixed', 1, {one});
             UPDATE {{positions}} SET last = 100;
             INSERT INTO {{snapshots}} VALUES ('counter', 'ahead', 10, '100'::bytea);"
        ),
    )
    .await;

    match spawn_counter(&log, &store, "gap").await {
        Err(SpawnError::Gap {
            expected, found, ..
        }) => assert_eq!((expected, found), (SeqNo::new(2), Some(SeqNo::new(3)))),
        other => panic!("a gap must stop the spawn, got {:?}", other.map(|_| ())),
    }
    match spawn_counter(&log, &store, "ahead").await {
        Err(SpawnError::SnapshotAheadOfLog {
            snapshot_seq_no,
            log_seq_no,
            ..
        }) => assert_eq!(
            (snapshot_seq_no, log_seq_no),
            (SeqNo::new(10), SeqNo::new(2))
        ),
        other => panic!(
            "a snapshot ahead of the log must stop the spawn, got {:?}",
            other.map(|_| ())
        ),
    }
    let mixed = spawn_counter(&log, &store, "mixed")
        .await
        .expect("the entity with its one event spawns");
    assert_eq!(mixed.handle_command(Get).await.expect("get"), Ok(1));

    // A second event with seq_no 1, possible once the key is dropped.
    raw_sql(
        &db,
        &log,
        &format!(
            "ALTER TABLE {{events}} DROP CONSTRAINT events_pkey;
             INSERT INTO {{events}} VALUES (9, 'counter', 'dup', 1, {one}),
                                           (10, 'counter', 'dup', 1, {two});"
        ),
    )
    .await;
    match spawn_counter(&log, &store, "dup").await {
        Err(SpawnError::Gap {
            expected, found, ..
        }) => assert_eq!((expected, found), (SeqNo::new(2), Some(SeqNo::new(1)))),
        other => panic!(
            "a duplicated seq_no must stop the spawn, got {:?}",
            other.map(|_| ())
        ),
    }
    // And setup now refuses the table, so the log is not run on it unaware.
    assert!(
        matches!(
            log.setup().await,
            Err(PostgresError::IncompatibleTable { .. })
        ),
        "setup must refuse the table without its primary key"
    );
}

/// NULL cells (NOT NULL dropped after setup by another program) are reported
/// as errors naming the table and the entity (events_by_id) or the position
/// (events_by_type), never a panic; a NULL seq_no is not silently skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_cells_are_reported_with_table_and_row() {
    let db = TestDb::new();
    let log = db.log().await;
    let table = log.tables().events();
    raw_sql(
        &db,
        &log,
        "ALTER TABLE {events} ALTER COLUMN event DROP NOT NULL;
         INSERT INTO {events} VALUES (1, 'nullev', 'e', 1, NULL);
         UPDATE {positions} SET last = 10;",
    )
    .await;
    let mut failures = Vec::new();
    let by_id = timeout(
        WAIT,
        log.events_by_id("nullev", "e", SeqNo::ZERO)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("events_by_id must not hang");
    match by_id.as_slice() {
        [Err(error)] => {
            let text = chain(error);
            if !(matches!(error, EventLogError::Corrupt { .. })
                && text.contains(&table)
                && text.contains("\"e\""))
            {
                failures.push(format!(
                    "events_by_id over a NULL event: want Corrupt naming {table} and entity \
                     nullev/\"e\", got {error:?}"
                ));
            }
        }
        other => failures.push(format!(
            "events_by_id over a NULL event: want one error, got {other:?}"
        )),
    }
    let by_type = timeout(
        WAIT,
        Box::pin(log.events_by_type("nullev", Position::START)).next(),
    )
    .await
    .expect("events_by_type must not hang");
    match &by_type {
        Some(Err(error @ EventLogError::Corrupt { .. })) if chain(error).contains(&table) => {}
        other => failures.push(format!(
            "events_by_type over a NULL event: want Corrupt naming {table} and position 1, \
             got {other:?}"
        )),
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Events and snapshots of 24 MiB are stored and read back whole, through
/// `events_by_id`, `events_by_type` and `load`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_events_and_snapshots_round_trip() {
    let (_db, log, store) = db_with_log_and_store().await;
    let huge: Bytes = (0..24 * 1024 * 1024)
        .map(|i: u32| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let last = timeout(
        WAIT,
        log.append("big", "b", SeqNo::ZERO, &[huge.clone(), ev("small")]),
    )
    .await
    .expect("append must not hang")
    .expect("append of 24 MiB");
    assert_eq!(last, SeqNo::new(2));
    let read: Vec<(SeqNo, Bytes)> = timeout(
        WAIT,
        log.events_by_id("big", "b", SeqNo::ZERO).try_collect(),
    )
    .await
    .expect("must not hang")
    .expect("read back");
    assert_eq!(read.len(), 2);
    assert!(read[0].1 == huge, "the huge event must come back whole");
    let envelope = timeout(
        WAIT,
        Box::pin(log.events_by_type("big", Position::START)).next(),
    )
    .await
    .expect("must not hang")
    .expect("an item")
    .expect("an envelope");
    assert!(envelope.event == huge && envelope.seq_no == SeqNo::new(1));
    store
        .save("big", "b", SeqNo::new(2), huge.clone())
        .await
        .expect("save 24 MiB");
    let loaded = store.load("big", "b").await.expect("load").expect("stored");
    assert!(loaded.0 == SeqNo::new(2) && loaded.1 == huge);
}

// ---------------------------------------------------------------------------
// 2. Tables of another shape, and a log used without setup
// ---------------------------------------------------------------------------

async fn log_without_setup(db: &TestDb) -> PostgresEventLog {
    PostgresEventLog::new(db.config.clone())
        .await
        .expect("connect to DATABASE_URL")
}

fn differences(result: Result<(), PostgresError>) -> (String, Vec<String>) {
    match result {
        Err(PostgresError::IncompatibleTable { table, differences }) => (table, differences),
        other => panic!("want IncompatibleTable, got {other:?}"),
    }
}

/// A fresh schema in which `sql` ran (as `raw_sql` runs it), and a log on
/// it without setup.
async fn schema_with(sql: &str) -> (TestDb, PostgresEventLog) {
    let db = TestDb::new();
    let log = log_without_setup(&db).await;
    raw_sql(
        &db,
        &log,
        &format!("CREATE SCHEMA \"{}\"; {sql}", db.config.schema),
    )
    .await;
    (db, log)
}

/// `result` refuses `want_table` with a difference starting with `expected`.
fn assert_refused(result: Result<(), PostgresError>, want_table: &str, expected: &str, sql: &str) {
    let (table, found) = differences(result);
    assert_eq!(table, want_table, "{sql}");
    assert!(
        found.iter().any(|d| d.starts_with(expected)),
        "{sql}: {expected:?} not in {found:?}"
    );
}

/// Shapes `setup_checks_existing_tables.rs` does not try: the event column
/// missing or of another type, the position table without `last`, a
/// snapshot table without its key or with a text state. Each is refused,
/// naming the table and the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_more_shapes() {
    const COLUMNS: &str = "position BIGINT NOT NULL, type_name TEXT COLLATE \"C\" NOT NULL,
         id TEXT COLLATE \"C\" NOT NULL, seq_no BIGINT NOT NULL";
    const KEYS: &str = "PRIMARY KEY (type_name, id, seq_no), UNIQUE (type_name, position)";
    let event_cases = [
        (
            format!("CREATE TABLE {{events}} ({COLUMNS}, {KEYS})"),
            "events",
            "no column \"event\"",
        ),
        (
            format!("CREATE TABLE {{events}} ({COLUMNS}, event TEXT NOT NULL, {KEYS})"),
            "events",
            "column \"event\" is text, not bytea",
        ),
        (
            "CREATE TABLE {positions} (only_row BOOLEAN PRIMARY KEY DEFAULT true)".to_owned(),
            "positions",
            "no column \"last\"",
        ),
    ];
    for (sql, which, expected) in event_cases {
        let (_db, log) = schema_with(&sql).await;
        let want = if which == "events" {
            log.tables().events()
        } else {
            log.tables().positions()
        };
        assert_refused(log.setup().await, &want, expected, &sql);
    }
    let snapshot_cases = [
        (
            "CREATE TABLE {snapshots} (type_name TEXT COLLATE \"C\" NOT NULL,
                 id TEXT COLLATE \"C\" NOT NULL, seq_no BIGINT NOT NULL, state BYTEA NOT NULL)",
            "no PRIMARY KEY or UNIQUE constraint on (type_name, id)",
        ),
        (
            "CREATE TABLE {snapshots} (type_name TEXT COLLATE \"C\" NOT NULL,
                 id TEXT COLLATE \"C\" NOT NULL, seq_no BIGINT NOT NULL, state TEXT NOT NULL,
                 PRIMARY KEY (type_name, id))",
            "column \"state\" is text, not bytea",
        ),
    ];
    for (sql, expected) in snapshot_cases {
        let (_db, log) = schema_with(sql).await;
        let store = PostgresSnapshotStore::from_log(&log);
        assert_refused(
            store.setup().await,
            &log.tables().snapshots(),
            expected,
            sql,
        );
    }
}

/// An event table that exists (with events) while its position table does
/// not: without setup, the first append says to run setup and names the
/// missing position table; setup then seeds the position table from the
/// stored events, so the next append continues above them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_position_table_is_named_and_seeded_by_setup() {
    let db = TestDb::new();
    let log = db.log().await;
    log.append("t", "a", SeqNo::ZERO, &[ev("1"), ev("2")])
        .await
        .expect("append");
    let positions = log.tables().positions();
    raw_sql(
        &db,
        &log,
        "UPDATE {events} SET position = position + 40; DROP TABLE {positions};",
    )
    .await;
    // A new log: its writer knows nothing of the table.
    let fresh = log_without_setup(&db).await;
    let error = timeout(WAIT, fresh.append("t", "a", SeqNo::new(2), &[ev("3")]))
        .await
        .expect("append must not hang")
        .expect_err("the position table is gone");
    let text = chain(&error);
    assert!(
        text.contains("setup()"),
        "the error must say to run setup: {text}"
    );
    fresh
        .setup()
        .await
        .expect("setup recreates the position table");
    fresh
        .append("t", "a", SeqNo::new(2), &[ev("3")])
        .await
        .expect("append after setup");
    let envelopes: Vec<_> = Box::pin(fresh.events_by_type("t", Position::START))
        .take(3)
        .try_collect()
        .await
        .expect("read");
    let stored: Vec<u64> = envelopes.iter().map(|e| e.position.get()).collect();
    assert_eq!(stored, [41, 42, 43], "setup seeds from the stored events");
    // Checked last, so the seeding above is checked too.
    let named = text.split(" <- ").next().unwrap_or_default().to_owned();
    assert!(
        named.contains(&positions),
        "the error must name the missing table {positions}, not the event table that \
         exists: {named}"
    );
}

/// Another program inserted an event at the next position without moving
/// the position table on: appends of that type fail with a readable error
/// naming the table (not a `Conflict`, not a hang), and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_taken_behind_the_logs_back_fails_readably() {
    let db = TestDb::new();
    let log = db.log().await;
    log.append("t", "a", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("append");
    raw_sql(
        &db,
        &log,
        "INSERT INTO {events} VALUES (2, 't', 'foreign', 1, '\\x00')",
    )
    .await;
    let started = Instant::now();
    let result = timeout(WAIT, log.append("t", "a", SeqNo::new(1), &[ev("2")]))
        .await
        .expect("append must not hang");
    let error = result.expect_err("position 2 is taken");
    assert!(!error.is_conflict(), "not a conflict: {error:?}");
    let text = chain(&error);
    assert!(
        text.contains(&log.tables().events()) && text.contains("position"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        log.last_seq_no("t", "a").await.expect("last"),
        SeqNo::new(1)
    );
}

// ---------------------------------------------------------------------------
// 3. Config edge cases
// ---------------------------------------------------------------------------

/// `base` with `change` made to it.
fn changed(base: &PostgresConfig, change: impl FnOnce(&mut PostgresConfig)) -> PostgresConfig {
    let mut config = base.clone();
    change(&mut config);
    config
}

/// Out-of-range numbers, zero durations, and schema / table names with
/// quotes, uppercase, unicode, spaces or too many bytes are refused by
/// `new` before connecting, naming the kebab-case key, by the log and the
/// snapshot store alike; serde input of a zero timeout too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_config_names_the_key() {
    let base = TestDb::new().config.clone();
    let mut cases: Vec<(PostgresConfig, &str)> = vec![
        (changed(&base, |c| c.pool_size = 0), "pool-size"),
        (changed(&base, |c| c.pool_size = 10_001), "pool-size"),
        (changed(&base, |c| c.max_batch = 0), "max-batch"),
        (changed(&base, |c| c.fetch_size = 0), "fetch-size"),
        (changed(&base, |c| c.fetch_size = 1_000_001), "fetch-size"),
        (
            changed(&base, |c| c.connect_timeout = Duration::ZERO),
            "connect-timeout",
        ),
        (
            changed(&base, |c| c.statement_timeout = Duration::ZERO),
            "statement-timeout",
        ),
        (
            changed(&base, |c| c.poll_interval = Duration::ZERO),
            "poll-interval",
        ),
        (changed(&base, |c| c.host = String::new()), "host"),
        (changed(&base, |c| c.user = String::new()), "user"),
        (changed(&base, |c| c.dbname = String::new()), "dbname"),
    ];
    for schema in [
        "Public".to_owned(),
        "sch\"ema".to_owned(),
        "sch'ema".to_owned(),
        "schéma".to_owned(),
        "σχήμα".to_owned(),
        "my schema".to_owned(),
        "pg_catalog".to_owned(),
        "s".repeat(64),
        "9lives".to_owned(),
    ] {
        cases.push((changed(&base, |c| c.schema = schema), "schema"));
    }
    cases.push((
        changed(&base, |c| c.events_table = "e".repeat(41)),
        "events-table",
    ));
    cases.push((
        changed(&base, |c| c.snapshots_table = "Snapshots".to_owned()),
        "snapshots-table",
    ));
    for (config, field) in cases {
        let started = Instant::now();
        let error = PostgresEventLog::new(config.clone())
            .await
            .expect_err("must be refused");
        assert!(
            matches!(&error, PostgresError::InvalidConfig { field: f, .. } if *f == field),
            "{field}: got {error:?}"
        );
        assert!(error.to_string().contains(field), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1), "{field}: slow");
        let error = PostgresSnapshotStore::new(config)
            .await
            .expect_err("must be refused");
        assert!(
            matches!(&error, PostgresError::InvalidConfig { field: f, .. } if *f == field),
            "{field} (snapshot store): got {error:?}"
        );
    }
    // 63 bytes is PostgreSQL's limit and accepted.
    let mut long = TestDb::new();
    long.config.schema = format!("es_test_{}", "l".repeat(55));
    let log = long.log().await;
    log.append("t", "a", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("a 63-byte schema works");
    // From serde: a zero duration parses, and `new` refuses it.
    let config: PostgresConfig =
        serde_json::from_str(r#"{"statement-timeout": "0s"}"#).expect("parses");
    assert!(matches!(
        PostgresEventLog::new(config).await,
        Err(PostgresError::InvalidConfig {
            field: "statement-timeout",
            ..
        })
    ));
}

/// An application_name with quotes, semicolons, unicode and far beyond 63
/// bytes connects and works (the server cuts and cleans it; it is never SQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_application_names_work() {
    for name in [
        "it's \"quoted\"; DROP TABLE x; --".to_owned(),
        "ünïcødé ✓ name".to_owned(),
        format!("es_test_app_{}", "x".repeat(300)),
        String::new(),
        " ".to_owned(),
    ] {
        let mut db = TestDb::new();
        db.config.application_name = name.clone();
        let log = timeout(WAIT, db.log()).await.expect("must not hang");
        let last = log
            .append("t", "a", SeqNo::ZERO, &[ev("1")])
            .await
            .unwrap_or_else(|e| panic!("application_name {name:?}: {e}"));
        assert_eq!(last, SeqNo::new(1));
    }
}

/// A password (from a URL or set directly) appears in no Debug or Display of
/// the config, the log, the store or any connection error, nor in what the
/// crate logs while failing to connect.
#[tokio::test(flavor = "current_thread")]
async fn passwords_stay_out_of_debug_errors_and_logs() {
    const SECRET: &str = "Hunter2-s3cr3t";
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = std::sync::Arc::clone(&logs);
        move || Capture(std::sync::Arc::clone(&logs))
    };
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(writer)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let db = TestDb::new();
    let mut config = PostgresConfig::from_url(&format!(
        "postgres://postgres:{SECRET}@127.0.0.1:1/test?sslmode=disable"
    ))
    .expect("valid URL");
    config.connect_timeout = Duration::from_millis(500);
    let error = PostgresEventLog::new(config.clone())
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(error, PostgresError::Connect { .. }), "{error:?}");
    let mut seen = vec![
        format!("{error}"),
        format!("{error:?}"),
        format!("{config:?}"),
    ];
    if let Err(e) = PostgresSnapshotStore::new(config.clone()).await {
        seen.push(format!("{e} {e:?}"));
    }
    // Bad URLs with the password in them.
    for url in [
        format!("postgres://u:{SECRET}@host:99999/db"),
        format!("postgres://u:{SECRET}@host/db?sslmode=bogus"),
        format!("host=h password={SECRET} port=x"),
    ] {
        let e = PostgresConfig::from_url(&url).expect_err("invalid URL");
        seen.push(format!("{e} {e:?}"));
    }
    // A working log with a password (trust auth ignores it).
    let mut working = db.config.clone();
    working.password = Some(SECRET.to_owned());
    let log = PostgresEventLog::new(working.clone())
        .await
        .expect("trust auth accepts any password");
    log.setup().await.expect("setup");
    let store = PostgresSnapshotStore::from_log(&log);
    seen.push(format!("{log:?} {store:?} {:?}", log.config()));
    seen.push(serde_json::to_string(&working).expect("serialize"));
    seen.push(String::from_utf8_lossy(&logs.lock().expect("logs")).into_owned());
    for text in seen {
        assert!(!text.contains(SECRET), "the password leaked: {text}");
    }
}

struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// TLS settings that cannot work: a CA file that is not PEM is refused as
/// config naming the file; verify-full against an IP with no trusted
/// certificate ends in a typed error, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_that_cannot_work_fail_typed() {
    let db = TestDb::new();
    let garbage = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(garbage.path(), b"this is not a certificate").expect("write");
    for mode in [TlsMode::VerifyCa, TlsMode::VerifyFull] {
        let error = PostgresEventLog::new(PostgresConfig {
            tls_mode: mode,
            tls_root_cert: Some(garbage.path().to_owned()),
            ..db.config.clone()
        })
        .await
        .expect_err("garbage CA file");
        match &error {
            PostgresError::InvalidConfig { field, reason } => {
                assert_eq!(*field, "tls-root-cert");
                assert!(
                    reason.contains(&garbage.path().display().to_string()),
                    "{reason}"
                );
            }
            other => panic!("{mode:?}: want InvalidConfig(tls-root-cert), got {other:?}"),
        }
    }
    let result = timeout(
        WAIT,
        PostgresEventLog::new(PostgresConfig {
            tls_mode: TlsMode::VerifyFull,
            ..db.config.clone()
        }),
    )
    .await
    .expect("must not hang");
    match result {
        Err(PostgresError::Tls { .. }) => {}
        other => panic!(
            "verify-full with the system roots against this server: want Tls, got {:?}",
            other.map(|_| "a log")
        ),
    }
}

// ---------------------------------------------------------------------------
// 4. Servers that never answer, statements that outlast the timeout
// ---------------------------------------------------------------------------

/// A server that accepts TCP but never speaks: `new` fails with `Connect`
/// within about the connect timeout, for the log and the snapshot store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_a_connect_error_within_the_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let config = PostgresConfig {
        port,
        connect_timeout: Duration::from_millis(400),
        ..TestDb::new().config.clone()
    };
    let started = Instant::now();
    let error = timeout(WAIT, PostgresEventLog::new(config.clone()))
        .await
        .expect("must not hang")
        .expect_err("the server never answers");
    assert!(matches!(error, PostgresError::Connect { .. }), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let error = timeout(WAIT, PostgresSnapshotStore::new(config))
        .await
        .expect("must not hang")
        .expect_err("the server never answers");
    assert!(matches!(error, PostgresError::Connect { .. }), "{error:?}");
    held.abort();
}

/// A statement timeout shorter than a commit (the position row is locked by
/// another session): the append fails with `Timeout` soon after the limit;
/// once the lock is gone, the log works and holds the event at most once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_longer_than_the_statement_timeout_fails_in_time() {
    let mut db = TestDb::new();
    db.config.statement_timeout = Duration::from_millis(300);
    let log = db.log().await;
    log.append("t", "a", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("append");
    let locker = db.raw().await;
    locker
        .batch_execute(&format!(
            "BEGIN; SELECT * FROM {} FOR UPDATE",
            log.tables().positions()
        ))
        .await
        .expect("lock the position row");
    let started = Instant::now();
    let result = timeout(WAIT, log.append("t", "a", SeqNo::new(1), &[ev("2")]))
        .await
        .expect("append must not hang");
    let elapsed = started.elapsed();
    let error = result.expect_err("the commit cannot finish in 300 ms");
    let text = chain(&error);
    assert!(
        text.contains("statement-timeout") || text.contains("did not answer"),
        "{text}"
    );
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    locker.batch_execute("ROLLBACK").await.expect("unlock");
    // The outcome is unknown (the abandoned statement may still commit once
    // the lock is gone): go on from what the log says, conflicts included.
    let next = timeout(WAIT, async {
        let mut expected = SeqNo::new(1);
        loop {
            match log.append("t", "a", expected, &[ev("3")]).await {
                Ok(last) => return last,
                Err(EventLogError::Conflict { actual, .. }) => expected = actual,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
    .expect("appends work again once the lock is gone");
    let stored = read_all(&log, "t", "a").await;
    let events: Vec<Bytes> = stored.iter().map(|(_, e)| e.clone()).collect();
    assert!(
        events == [ev("1"), ev("3")] || events == [ev("1"), ev("2"), ev("3")],
        "the timed-out event is stored at most once: {events:?}"
    );
    assert_eq!(stored.len() as u64, next.get());
}

// ---------------------------------------------------------------------------
// 5. The server refuses or kills connections mid-use
// ---------------------------------------------------------------------------

/// A login role of this test (not a superuser, so its connection limit
/// holds), owning the test's schema; dropped afterwards.
struct Role {
    name: String,
    schema: String,
}

impl Role {
    /// With `may_create_schemas`, the role may also run CREATE SCHEMA in the database.
    async fn create_with(db: &TestDb, may_create_schemas: bool) -> Self {
        let name = format!("es_role_{:016x}", rand::random::<u64>());
        let schema = db.config.schema.clone();
        let grant = if may_create_schemas {
            format!(
                "DO $$ BEGIN EXECUTE format('GRANT CREATE ON DATABASE %I TO %I', \
                 current_database(), '{name}'); END $$;"
            )
        } else {
            String::new()
        };
        db.raw()
            .await
            .batch_execute(&format!(
                "CREATE ROLE \"{name}\" LOGIN NOSUPERUSER;
                 CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{name}\"; {grant}"
            ))
            .await
            .expect("create role and schema");
        Role { name, schema }
    }

    async fn set_limit(&self, db: &TestDb, limit: i32) {
        db.raw()
            .await
            .batch_execute(&format!(
                "ALTER ROLE \"{}\" CONNECTION LIMIT {limit}",
                self.name
            ))
            .await
            .expect("alter role");
    }

    async fn terminate(&self, client: &tokio_postgres::Client) -> usize {
        terminate_sessions(client, &self.name).await
    }
}

/// A test database used as a role of its own (see `Role::create_with`),
/// with a pool of two.
async fn db_as_a_role(may_create_schemas: bool) -> (TestDb, Role) {
    let mut db = TestDb::new();
    let role = Role::create_with(&db, may_create_schemas).await;
    db.config.user = role.name.clone();
    db.config.pool_size = 2;
    (db, role)
}

/// A log, set up, as a role of its own that may create schemas, with a pool of
/// two and two-second statement and connect timeouts.
async fn log_as_a_role() -> (TestDb, Role, PostgresEventLog) {
    let (mut db, role) = db_as_a_role(true).await;
    db.config.statement_timeout = Duration::from_secs(2);
    db.config.connect_timeout = Duration::from_secs(2);
    let log = db.log().await;
    (db, role, log)
}

/// Terminates every session of role `name`; returns how many there were
/// (0 if the query failed).
async fn terminate_sessions(client: &tokio_postgres::Client, name: &str) -> usize {
    client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&name],
        )
        .await
        .map(|rows| rows.len())
        .unwrap_or(0)
}

impl Drop for Role {
    fn drop(&mut self) {
        let (name, schema) = (self.name.clone(), self.schema.clone());
        support::block_on_own_thread(async move {
            let url = support::database_url();
            if let Ok((client, connection)) =
                tokio_postgres::connect(&url, tokio_postgres::NoTls).await
            {
                tokio::spawn(connection);
                terminate_sessions(&client, &name).await;
                let _ = client
                    .batch_execute(&format!(
                        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;
                         DROP OWNED BY \"{name}\";
                         DROP ROLE IF EXISTS \"{name}\";"
                    ))
                    .await;
            }
        });
    }
}

/// While the server refuses every new connection of the log's role (its
/// connection limit set to 0, its sessions terminated), appends and reads
/// fail readably within bounded time and a live stream does not hang; once
/// connections are allowed again, everything works and exactly the
/// acknowledged events are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_connections_fail_in_time_and_recover() {
    let (db, role, log) = log_as_a_role().await;
    log.append("t", "a", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("append");
    let mut live = Box::pin(log.events_by_type("t", Position::START));
    assert_eq!(
        timeout(WAIT, live.next())
            .await
            .expect("first event")
            .expect("an item")
            .expect("ok")
            .event,
        ev("1")
    );

    role.set_limit(&db, 0).await;
    let admin = db.raw().await;
    assert!(role.terminate(&admin).await > 0, "the log had sessions");
    let started = Instant::now();
    let append = timeout(WAIT, log.append("t", "a", SeqNo::new(1), &[ev("2")]))
        .await
        .expect("append must not hang");
    let error = append.expect_err("no connection can be made");
    let text = chain(&error);
    assert!(
        text.contains("too many connections") || text.contains("connect"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    let last = timeout(WAIT, log.last_seq_no("t", "a"))
        .await
        .expect("last_seq_no must not hang");
    assert!(last.is_err(), "{last:?}");
    let by_id = timeout(
        WAIT,
        log.events_by_id("t", "a", SeqNo::ZERO)
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("events_by_id must not hang");
    assert!(by_id.is_err(), "{by_id:?}");

    role.set_limit(&db, -1).await;
    let recovered = timeout(WAIT, async {
        loop {
            if let Ok(last) = log.last_seq_no("t", "a").await {
                match log.append("t", "a", last, &[ev("3")]).await {
                    Ok(last) => return last,
                    Err(e) => eprintln!("not yet: {e}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("appends work again once connections are allowed");
    let stored: Vec<Bytes> = read_all(&log, "t", "a")
        .await
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(stored, [ev("1"), ev("3")]);
    assert_eq!(recovered, SeqNo::new(2));
    // The live stream either delivers the new event or has ended with an
    // error; it does not hang.
    match timeout(WAIT, live.next()).await {
        Ok(Some(Ok(envelope))) => assert_eq!(envelope.event, ev("3")),
        Ok(Some(Err(e))) => eprintln!("the live stream ended with: {e}"),
        Ok(None) => panic!("the stream ended without an error"),
        Err(_) => panic!("the live stream hangs after the server came back"),
    }
}

/// For two seconds every session of the log's role is terminated as soon
/// as it appears. Appends keep going: each one ends (ok or a readable error)
/// in bounded time, every acknowledged event is stored exactly once, seq_nos
/// stay contiguous, and appends work afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_on_every_connect_loses_nothing_acknowledged() {
    let (db, role, log) = log_as_a_role().await;
    let admin = db.raw().await;
    let killing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let killer = {
        let killing = std::sync::Arc::clone(&killing);
        let name = role.name.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            while killing.load(std::sync::atomic::Ordering::Relaxed) {
                kills += terminate_sessions(&admin, &name).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            kills
        })
    };
    let until = Instant::now() + Duration::from_secs(2);
    let mut acknowledged = Vec::new();
    let mut errors = 0;
    let mut expected = SeqNo::ZERO;
    let mut n = 0u32;
    while Instant::now() < until {
        n += 1;
        let payload = ev(&format!("e{n}"));
        let started = Instant::now();
        let result = timeout(
            WAIT,
            log.append("t", "a", expected, std::slice::from_ref(&payload)),
        )
        .await
        .expect("an append must not hang");
        assert!(started.elapsed() < Duration::from_secs(6));
        match result {
            Ok(last) => {
                acknowledged.push(payload);
                expected = last;
            }
            Err(EventLogError::Conflict { actual, .. }) => expected = actual,
            Err(error) => {
                errors += 1;
                let text = chain(&error);
                assert!(!text.is_empty() && text.contains("postgres"), "{text}");
                if let Ok(Ok(last)) =
                    timeout(Duration::from_secs(6), log.last_seq_no("t", "a")).await
                {
                    expected = last;
                }
            }
        }
    }
    killing.store(false, std::sync::atomic::Ordering::Relaxed);
    let kills = killer.await.expect("killer");
    eprintln!(
        "{} acknowledged, {errors} failed, {kills} sessions terminated",
        acknowledged.len()
    );
    let after = timeout(WAIT, async {
        loop {
            if let Ok(last) = log.last_seq_no("t", "a").await
                && let Ok(last) = log.append("t", "a", last, &[ev("after")]).await
            {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("appends work once the killing stops");
    let stored = read_all(&log, "t", "a").await;
    assert_eq!(stored.len() as u64, after.get());
    for (i, (seq_no, _)) in stored.iter().enumerate() {
        assert_eq!(seq_no.get(), i as u64 + 1, "seq_nos are contiguous");
    }
    for payload in &acknowledged {
        let copies = stored.iter().filter(|(_, e)| e == payload).count();
        assert_eq!(copies, 1, "acknowledged {payload:?} stored {copies} times");
    }
    assert!(kills > 0, "the killer terminated nothing");
    drop(role);
}

/// A spawned entity whose log's connections are refused: the command gets a
/// technical error in bounded time, and later sends get the same cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entity_fails_readably_when_connections_are_refused() {
    let (db, role, log) = log_as_a_role().await;
    let store = set_up_store(&log).await;
    let counter = spawn_counter(&log, &store, "c").await.expect("spawn");
    assert_eq!(
        counter.handle_command(Increase(1)).await.expect("ok"),
        Ok(1)
    );
    role.set_limit(&db, 0).await;
    role.terminate(&db.raw().await).await;
    let result = timeout(WAIT, counter.handle_command(Increase(1)))
        .await
        .expect("the command must not hang");
    let error = result.expect_err("the append cannot be made");
    let first = chain(&error);
    let later = timeout(WAIT, counter.handle_command(Get))
        .await
        .expect("must not hang")
        .expect_err("the entity stopped");
    let later = chain(&later);
    assert!(
        !later.contains("channel closed") && later.contains("connect"),
        "later sends must carry the cause: {later} (first: {first})"
    );
    role.set_limit(&db, -1).await;
    let again = timeout(WAIT, async {
        loop {
            if let Ok(entity) = Counter::default()
                .entity()
                .spawn("c".to_owned(), log.clone(), store.clone(), SerdeJson)
                .await
            {
                return entity;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("respawn once connections are allowed");
    assert_eq!(again.handle_command(Get).await.expect("get"), Ok(1));
}

/// An event table with the right columns and keys but without the CHECKs
/// on `seq_no > 0` and `position > 0` passes setup today, and then holds an
/// event at seq_no 0 that every spawn silently leaves out (the runtime reads
/// from seq_no 1, and `last_seq_no` is 0). Setup must refuse such a table,
/// as it refuses one without the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_an_events_table_without_its_checks() {
    let (_db, log) = schema_with(&format!(
        "CREATE TABLE {{events}} (position BIGINT NOT NULL,
             type_name TEXT COLLATE \"C\" NOT NULL, id TEXT COLLATE \"C\" NOT NULL,
             seq_no BIGINT NOT NULL, event BYTEA NOT NULL,
             PRIMARY KEY (type_name, id, seq_no), UNIQUE (type_name, position));
         INSERT INTO {{events}} VALUES (1, 'counter', 'c', 0, {});",
        increased(5)
    ))
    .await;
    let setup = log.setup().await;
    if setup.is_ok() {
        let store = set_up_store(&log).await;
        let value = match spawn_counter(&log, &store, "c").await {
            Ok(entity) => format!("{:?}", entity.handle_command(Get).await),
            Err(e) => format!("spawn failed: {e}"),
        };
        panic!(
            "setup accepted an event table without CHECK (seq_no > 0) / (position > 0); the \
             event stored at seq_no 0 (Increased(5)) is silently left out: the counter \
             spawns with {value}"
        );
    }
    let (table, found) = differences(setup);
    assert_eq!(table, log.tables().events());
    assert!(found.iter().any(|d| d.contains("seq_no")), "{found:?}");
}

/// A least-privilege role that owns its (pre-created) schema but may not
/// create schemas in the database: `setup` must create the tables in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_works_in_an_owned_schema_without_create_on_the_database() {
    let (db, role) = db_as_a_role(false).await;
    let log = PostgresEventLog::new(db.config.clone())
        .await
        .expect("connect as the role");
    let setup = timeout(WAIT, log.setup()).await.expect("must not hang");
    let store = PostgresSnapshotStore::from_log(&log);
    let snapshot_setup = timeout(WAIT, store.setup()).await.expect("must not hang");
    assert!(
        setup.is_ok() && snapshot_setup.is_ok(),
        "the schema exists and the role owns it; setup must not need CREATE on the \
         database: log {setup:?}, snapshots {snapshot_setup:?}"
    );
    log.append("t", "a", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("append");
    drop(role);
}

/// With the seq_no CHECK dropped, entities hold only a row at seq_no -5.
/// Appends expecting 0 that the writer batches with appends of entities it
/// does not know yet (so the batch takes the checking statement) must be
/// acknowledged only if their event is stored: the statement compares the
/// stored -5 with 0 and writes nothing, so an `Ok` is a lost acknowledged
/// event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_negative_stored_seq_no_never_becomes_an_acknowledgement() {
    let db = TestDb::new();
    let setup_log = db.log().await;
    let mut sql = "ALTER TABLE {events} DROP CONSTRAINT events_seq_no_check;".to_owned();
    for i in 0..200 {
        sql.push_str(&format!(
            "INSERT INTO {{events}} VALUES ({}, 't', 'neg{i}', -5, '\\x00'), \
             ({}, 't', 'known{i}', 1, '\\x00');",
            1000 + 2 * i,
            1001 + 2 * i
        ));
    }
    sql.push_str("UPDATE {positions} SET last = 10000;");
    raw_sql(&db, &setup_log, &sql).await;
    drop(setup_log);
    // A fresh log: it knows none of these entities. Not set up again: setup
    // refuses the table without its CHECK.
    let log = log_without_setup(&db).await;
    let refused = log.setup().await.expect_err("setup refuses the table");
    assert!(
        refused.to_string().contains("CHECK (seq_no > 0)"),
        "{refused}"
    );
    let mut tasks = Vec::new();
    for i in 0..200 {
        for (id, expected) in [
            (format!("neg{i}"), SeqNo::ZERO),
            (format!("known{i}"), SeqNo::new(1)),
        ] {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let result = log
                    .append("t", &id, expected, &[ev(&format!("{id}-x"))])
                    .await;
                (id, result)
            }));
        }
    }
    let mut lost = Vec::new();
    let mut acknowledged = 0;
    for task in tasks {
        let (id, result) = timeout(WAIT, task).await.expect("no hang").expect("task");
        if let Ok(last) = result {
            acknowledged += 1;
            let stored = read_all(&log, "t", &id).await;
            if !stored.iter().any(|(_, e)| *e == ev(&format!("{id}-x"))) {
                lost.push(format!("{id} (acknowledged as seq_no {last})"));
            }
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {acknowledged} acknowledged appends are not stored: {}",
        lost.len(),
        lost.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
    );
}
