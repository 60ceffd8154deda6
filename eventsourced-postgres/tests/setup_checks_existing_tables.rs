//! `setup` keeps an existing event, position or snapshot table only if it has the
//! columns and keys the log relies on, judged by the catalog (columns, types,
//! NOT NULL, collation, and unique indexes by their columns, not by name).
//! Otherwise it returns `PostgresError::IncompatibleTable` naming the table and
//! every difference, and changes nothing. Without this, a table without the
//! primary key let a stale append write a second event with the same seq_no.

mod support;

use eventsourced::{EventLog, EventLogError, SeqNo};
use eventsourced_postgres::{PostgresError, PostgresEventLog};
use support::{TestDb, ev};

/// The event table's columns as `setup` creates them.
const COLUMNS: &str = "position  BIGINT NOT NULL,
     type_name TEXT COLLATE \"C\" NOT NULL,
     id        TEXT COLLATE \"C\" NOT NULL,
     seq_no    BIGINT NOT NULL,
     event     BYTEA  NOT NULL";

/// A log on the schema of `db`, without setup.
async fn log_without_setup(db: &TestDb) -> PostgresEventLog {
    PostgresEventLog::new(db.config.clone())
        .await
        .expect("connect to DATABASE_URL")
}

/// Creates the schema of `db` and runs `sql` in it, with `{events}` and
/// `{positions}` standing for the log's qualified table names.
async fn create(db: &TestDb, log: &PostgresEventLog, sql: &str) {
    let sql = sql
        .replace("{events}", &log.tables().events())
        .replace("{positions}", &log.tables().positions());
    db.raw()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"; {sql}",
            db.config.schema
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The table and the differences of an `IncompatibleTable` error.
fn incompatible(result: Result<(), PostgresError>) -> (String, Vec<String>) {
    match result {
        Err(PostgresError::IncompatibleTable { table, differences }) => (table, differences),
        other => panic!("setup must refuse the table with IncompatibleTable, got {other:?}"),
    }
}

/// Whether the relation `name` (qualified) exists.
async fn exists(db: &TestDb, name: &str) -> bool {
    db.raw()
        .await
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .expect("to_regclass")
        .get(0)
}

/// A table with the right columns but neither key (nor NOT NULL, nor the
/// "C" collation) is refused; the error names the table and each missing
/// piece. Once the table is given its keys, `setup` keeps it and a stale
/// append is a `Conflict` that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_an_events_table_without_its_keys() {
    let db = TestDb::new();
    let log = log_without_setup(&db).await;
    create(
        &db,
        &log,
        "CREATE TABLE {events} (position BIGINT, type_name TEXT, id TEXT, seq_no BIGINT, event BYTEA)",
    )
    .await;
    let result = log.setup().await;
    let message = result.as_ref().map_err(ToString::to_string).err();
    let (table, differences) = incompatible(result);
    assert_eq!(table, log.tables().events());
    let message = message.expect("an error");
    assert!(
        message.contains(&log.tables().events()) && message.contains("setup()"),
        "{message}"
    );
    for expected in [
        "column \"seq_no\" allows NULL",
        "column \"id\" has collation \"default\", not \"C\"",
        "no PRIMARY KEY or UNIQUE constraint on (type_name, id, seq_no)",
        "no PRIMARY KEY or UNIQUE constraint on (type_name, position)",
        "no CHECK (position > 0)",
        "no CHECK (seq_no > 0)",
    ] {
        assert!(
            differences.iter().any(|d| d.starts_with(expected)),
            "{expected:?} missing from {differences:?}"
        );
    }
    assert!(
        !exists(&db, &log.tables().positions()).await,
        "a refused setup changes nothing"
    );

    // Given the keys, checks and column rules, the table is kept, and a stale
    // append conflicts instead of writing a second event 2.
    db.raw()
        .await
        .batch_execute(&format!(
            "ALTER TABLE {t} ALTER type_name TYPE TEXT COLLATE \"C\", ALTER id TYPE TEXT COLLATE \"C\",
                 ALTER position SET NOT NULL, ALTER type_name SET NOT NULL, ALTER id SET NOT NULL,
                 ALTER seq_no SET NOT NULL, ALTER event SET NOT NULL,
                 ADD PRIMARY KEY (type_name, id, seq_no), ADD UNIQUE (type_name, position),
                 ADD CHECK (position > 0), ADD CHECK (seq_no > 0)",
            t = log.tables().events()
        ))
        .await
        .expect("repair the table");
    log.setup().await.expect("the repaired table is kept");
    let other = log_without_setup(&db).await;
    log.append("t", "x", SeqNo::ZERO, &[ev("a1")])
        .await
        .expect("a1");
    other
        .append("t", "x", SeqNo::new(1), &[ev("b2")])
        .await
        .expect("b2");
    let stale = log.append("t", "x", SeqNo::new(1), &[ev("a2")]).await;
    assert!(
        matches!(
            stale,
            Err(EventLogError::Conflict { actual, .. }) if actual == SeqNo::new(2)
        ),
        "{stale:?}"
    );
    assert_eq!(
        log.last_seq_no("t", "x").await.expect("last"),
        SeqNo::new(2)
    );
}

/// A table of a wholly different shape that merely has a `position` column is
/// refused, with every missing column listed, and its rows are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_a_table_of_another_shape_and_leaves_it_alone() {
    let db = TestDb::new();
    let log = log_without_setup(&db).await;
    create(
        &db,
        &log,
        "CREATE TABLE {events} (position BIGINT PRIMARY KEY, note TEXT);
         INSERT INTO {events} VALUES (1, 'someone else''s data');",
    )
    .await;
    let (table, differences) = incompatible(log.setup().await);
    assert_eq!(table, log.tables().events());
    for column in ["type_name", "id", "seq_no", "event"] {
        assert!(
            differences
                .iter()
                .any(|d| d.starts_with(&format!("no column \"{column}\""))),
            "{column} missing from {differences:?}"
        );
    }
    let note: String = db
        .raw()
        .await
        .query_one(
            &format!(
                "SELECT note FROM {} WHERE position = 1",
                log.tables().events()
            ),
            &[],
        )
        .await
        .expect("the foreign row")
        .get(0);
    assert_eq!(note, "someone else's data");
    assert!(!exists(&db, &log.tables().positions()).await);
}

/// Keys that do not make every insert unique at once (deferrable, partial, in
/// another column order), columns of another type or collation, a column the
/// log's inserts cannot leave out, and a view in the table's place are each
/// refused with the difference named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_keys_and_columns_the_log_cannot_rely_on() {
    let pk = "PRIMARY KEY (type_name, id, seq_no)";
    let unique = "UNIQUE (type_name, position)";
    let cases = [
        (
            format!(
                "CREATE TABLE {{events}} ({COLUMNS}, {pk} DEFERRABLE INITIALLY DEFERRED, {unique})"
            ),
            "no PRIMARY KEY or UNIQUE constraint on (type_name, id, seq_no)",
        ),
        (
            format!(
                "CREATE TABLE {{events}} ({COLUMNS}, {pk});
                 CREATE UNIQUE INDEX ON {{events}} (type_name, position) WHERE position > 100"
            ),
            "no PRIMARY KEY or UNIQUE constraint on (type_name, position)",
        ),
        (
            format!(
                "CREATE TABLE {{events}} ({COLUMNS}, PRIMARY KEY (id, type_name, seq_no), {unique})"
            ),
            "no PRIMARY KEY or UNIQUE constraint on (type_name, id, seq_no)",
        ),
        (
            format!(
                "CREATE TABLE {{events}} ({}, {pk}, {unique})",
                COLUMNS.replace("seq_no    BIGINT", "seq_no    INTEGER")
            ),
            "column \"seq_no\" is integer, not bigint",
        ),
        (
            format!(
                "CREATE TABLE {{events}} ({}, {pk}, {unique})",
                COLUMNS.replace("id        TEXT COLLATE \"C\"", "id        TEXT")
            ),
            "column \"id\" has collation \"default\", not \"C\"",
        ),
        (
            format!("CREATE TABLE {{events}} ({COLUMNS}, tenant TEXT NOT NULL, {pk}, {unique})"),
            "column \"tenant\" is NOT NULL without a default",
        ),
        (
            "CREATE VIEW {events} AS SELECT 1::bigint AS position".to_owned(),
            "it is a view, not a table",
        ),
    ];
    for (sql, expected) in cases {
        let db = TestDb::new();
        let log = log_without_setup(&db).await;
        create(&db, &log, &sql).await;
        let (table, differences) = incompatible(log.setup().await);
        assert_eq!(table, log.tables().events(), "{sql}");
        assert!(
            differences.iter().any(|d| d.starts_with(expected)),
            "{sql}: {expected:?} missing from {differences:?}"
        );
    }
}

/// Keys are found by their columns, not their names: a table set up earlier
/// whose constraints were renamed, and that gained columns the log's inserts
/// can leave out, is kept; once its primary key is dropped it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_judges_keys_by_their_columns_not_their_names() {
    let db = TestDb::new();
    let log = db.log().await;
    log.append("t", "x", SeqNo::ZERO, &[ev("1")])
        .await
        .expect("append");
    let events = log.tables().events();
    let raw = db.raw().await;
    raw.batch_execute(&format!(
        "ALTER TABLE {events} RENAME CONSTRAINT events_pkey TO renamed_pkey;
         ALTER TABLE {events} RENAME CONSTRAINT events_type_position_key TO renamed_key;
         ALTER TABLE {events} ADD COLUMN note TEXT,
             ADD COLUMN at TIMESTAMPTZ NOT NULL DEFAULT now()"
    ))
    .await
    .expect("rename and add");
    log.setup()
        .await
        .expect("renamed keys and optional columns pass");
    assert_eq!(
        log.append("t", "x", SeqNo::new(1), &[ev("2")])
            .await
            .expect("append"),
        SeqNo::new(2)
    );

    raw.batch_execute(&format!(
        "ALTER TABLE {events} DROP CONSTRAINT renamed_pkey"
    ))
    .await
    .expect("drop the primary key");
    let (table, differences) = incompatible(log.setup().await);
    assert_eq!(table, events);
    assert!(
        matches!(
            differences.as_slice(),
            [only] if only.starts_with("no PRIMARY KEY or UNIQUE constraint on (type_name, id, seq_no)")
        ),
        "{differences:?}"
    );
}

/// The one-row position table is checked too: without the key on
/// `only_row`, with a `last` of another type, or holding a second row, it is
/// refused, naming the position table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_a_position_table_of_another_shape() {
    let cases = [
        (
            "CREATE TABLE {positions} (only_row BOOLEAN NOT NULL DEFAULT true, last BIGINT NOT NULL)",
            "no PRIMARY KEY or UNIQUE constraint on (only_row)",
        ),
        (
            "CREATE TABLE {positions} (only_row BOOLEAN PRIMARY KEY DEFAULT true, last INTEGER NOT NULL)",
            "column \"last\" is integer, not bigint",
        ),
        (
            "CREATE TABLE {positions} (only_row BOOLEAN PRIMARY KEY DEFAULT true, last BIGINT NOT NULL);
             INSERT INTO {positions} VALUES (false, 0)",
            "it holds 2 rows",
        ),
    ];
    for (sql, expected) in cases {
        let db = TestDb::new();
        let log = log_without_setup(&db).await;
        create(&db, &log, sql).await;
        let (table, differences) = incompatible(log.setup().await);
        assert_eq!(table, log.tables().positions(), "{sql}");
        assert!(
            differences.iter().any(|d| d.starts_with(expected)),
            "{sql}: {expected:?} missing from {differences:?}"
        );
    }
}

/// The snapshot store's `setup` checks its table the same way: one without
/// NOT NULL is refused (it would hold NULL rows that loaded as "no snapshot"
/// and that no save replaced). Without setup, such a row loads as `Corrupt`
/// and a save replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_setup_refuses_a_table_without_not_null_and_null_rows_are_corrupt() {
    use bytes::Bytes;
    use eventsourced::{SnapshotStore, SnapshotStoreError};
    use eventsourced_postgres::PostgresSnapshotStore;

    let db = TestDb::new();
    let store = PostgresSnapshotStore::new(db.config.clone())
        .await
        .expect("connect to DATABASE_URL");
    let table = store.tables().snapshots();
    db.raw()
        .await
        .batch_execute(&format!(
            "CREATE SCHEMA \"{}\";
             CREATE TABLE {table} (type_name TEXT, id TEXT, seq_no BIGINT, state BYTEA,
                 PRIMARY KEY (type_name, id));
             INSERT INTO {table} VALUES ('t', 'null-seq', NULL, '\\x00');",
            db.config.schema
        ))
        .await
        .expect("a snapshot table of another shape");
    let (refused, differences) = incompatible(store.setup().await);
    assert_eq!(refused, table);
    assert!(
        differences.iter().any(|d| d.contains("seq_no")),
        "{differences:?}"
    );

    let loaded = store.load("t", "null-seq").await;
    assert!(
        matches!(loaded, Err(SnapshotStoreError::Corrupt { .. })),
        "a row with a NULL seq_no must load as Corrupt, got {loaded:?}"
    );
    store
        .save("t", "null-seq", SeqNo::new(7), Bytes::from("seven"))
        .await
        .expect("a save over the damaged row");
    assert_eq!(
        store.load("t", "null-seq").await.expect("load"),
        Some((SeqNo::new(7), Bytes::from("seven"))),
        "the save must replace the damaged row"
    );
}
