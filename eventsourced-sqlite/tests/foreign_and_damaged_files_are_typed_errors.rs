//! Opening a file that is not ours, of another schema version, truncated or
//! corrupted gives a typed error naming the file, and modifies nothing; an
//! event whose bytes are damaged gives an error naming the entity and seq_no.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, EventSourcedExt, SeqNo, SerdeJson, SpawnError};
use eventsourced_sqlite::{APPLICATION_ID, SqliteError, SqliteEventLog};
use futures::TryStreamExt;
use rusqlite::Connection;
use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};
use support::{Add, Tally};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// The bytes of the file and whether its -wal/-shm companions exist.
fn snapshot_of(path: &Path) -> (Vec<u8>, bool, bool) {
    let companion = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p).exists()
    };
    (
        fs::read(path).expect("read the file"),
        companion("-wal"),
        companion("-shm"),
    )
}

fn assert_names_file(error: &SqliteError, path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        error.to_string().contains(&name),
        "the error must name the file {name}: {error}"
    );
}

/// Creates a database of this crate with `entities` x `events` events and
/// closes it (the last close checkpoints the WAL into the file).
async fn filled_database(path: &Path, entities: usize, events: u64) {
    let log = SqliteEventLog::open(path).expect("open");
    let payload = Bytes::from(vec![b'x'; 200]);
    for e in 0..entities {
        let batch = vec![payload.clone(); usize::try_from(events).unwrap()];
        log.append("t", &format!("e{e}"), SeqNo::ZERO, &batch)
            .await
            .expect("append");
    }
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        (
            "notes.txt",
            b"just some text, long enough to have a header of 100 bytes or so. ".repeat(3),
        ),
        ("tiny.db", b"tiny".to_vec()),
    ] {
        let path = dir.path().join(name);
        fs::write(&path, &content).unwrap();
        let before = snapshot_of(&path);
        let error = SqliteEventLog::open(&path).expect_err("a text file is not a database");
        assert!(
            matches!(error, SqliteError::NotADatabase { .. }),
            "{name}: expected NotADatabase, got {error:?}"
        );
        assert_names_file(&error, &path);
        assert_eq!(snapshot_of(&path), before, "{name} must not be modified");
    }
}

#[test]
fn a_database_of_another_application_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT);")
            .unwrap();
    }
    let before = snapshot_of(&path);
    let error = SqliteEventLog::open(&path).expect_err("another application's database");
    assert!(
        matches!(
            error,
            SqliteError::NotOurDatabase {
                application_id: 0,
                tables: 1,
                ..
            }
        ),
        "expected NotOurDatabase, got {error:?}"
    );
    assert_names_file(&error, &path);
    assert_eq!(snapshot_of(&path), before, "the file must not be modified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_and_unknown_schema_versions_are_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    for (version, newer) in [(2, true), (99, true), (0, false), (-1, false)] {
        let path = dir.path().join(format!("v{version}.db"));
        timeout(LIMIT, filled_database(&path, 1, 3)).await.unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = DELETE; PRAGMA user_version = {version};"
            ))
            .unwrap();
        }
        let before = snapshot_of(&path);
        let error = SqliteEventLog::open(&path).expect_err("a foreign schema version");
        match (&error, newer) {
            (
                SqliteError::NewerSchema {
                    found,
                    supported: 1,
                    ..
                },
                true,
            ) => {
                assert_eq!(*found, version)
            }
            (
                SqliteError::UnknownSchema {
                    found,
                    supported: 1,
                    ..
                },
                false,
            ) => {
                assert_eq!(*found, version)
            }
            _ => panic!("version {version}: unexpected {error:?}"),
        }
        assert_names_file(&error, &path);
        assert_eq!(
            snapshot_of(&path),
            before,
            "v{version} must not be modified"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.db");
    timeout(LIMIT, filled_database(&path, 20, 50))
        .await
        .unwrap();
    let len = fs::metadata(&path).unwrap().len();
    assert!(
        len > 100_000,
        "the database must span many pages ({len} bytes)"
    );
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let before = snapshot_of(&path);
    let error = SqliteEventLog::open(&path).expect_err("a truncated database");
    match &error {
        SqliteError::Truncated {
            expected, actual, ..
        } => {
            assert_eq!((*expected, *actual), (len, len / 2))
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert_names_file(&error, &path);
    assert_eq!(snapshot_of(&path), before, "the file must not be modified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_pages_give_corrupt_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    timeout(LIMIT, filled_database(&path, 20, 50))
        .await
        .unwrap();
    // Keep the header page, overwrite every other page with garbage.
    let mut bytes = fs::read(&path).unwrap();
    let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    for chunk in bytes[page..].chunks_mut(page) {
        chunk.fill(0xA5);
    }
    fs::write(&path, &bytes).unwrap();

    let name = "corrupt.db";
    let log = match SqliteEventLog::open(&path) {
        Err(error) => {
            assert!(
                matches!(error, SqliteError::Corrupt { .. }),
                "expected Corrupt, got {error:?}"
            );
            assert_names_file(&error, &path);
            return;
        }
        Ok(log) => log,
    };
    let read = timeout(
        LIMIT,
        log.events_by_id("t", "e3", SeqNo::new(1))
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    match read {
        Err(EventLogError::Corrupt { location, .. }) => assert!(
            location.contains(name) && location.contains("e3"),
            "the location must name the file and the entity: {location}"
        ),
        other => panic!("expected a Corrupt error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_event_bytes_name_the_entity_and_seq_no() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    {
        let log = SqliteEventLog::open(&path).unwrap();
        let tally = Tally::default()
            .entity()
            .spawn(
                "t1".to_owned(),
                log.clone(),
                log.snapshot_store(),
                SerdeJson,
            )
            .await
            .unwrap();
        for n in 1..=5 {
            timeout(LIMIT, tally.handle_command(Add(n)))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
    // Wait for the entity task to let go of the file, then damage event 3.
    let conn = Connection::open(&path).unwrap();
    conn.busy_timeout(LIMIT).unwrap();
    conn.execute(
        "UPDATE events SET event = x'7b22' WHERE entity_id = 't1' AND seq_no = 3",
        [],
    )
    .unwrap();
    drop(conn);

    let log = SqliteEventLog::open(&path).unwrap();
    let error = timeout(
        LIMIT,
        Tally::default().entity().spawn(
            "t1".to_owned(),
            log.clone(),
            log.snapshot_store(),
            SerdeJson,
        ),
    )
    .await
    .unwrap()
    .expect_err("event 3 does not decode");
    assert!(
        matches!(error, SpawnError::DecodeEvent { .. }),
        "expected DecodeEvent, got {error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("tally/t1") && message.contains('3'),
        "the error must name the entity and the seq_no: {message}"
    );

    // A value that is not even a blob is caught by the log itself.
    drop(log);
    let conn = Connection::open(&path).unwrap();
    conn.busy_timeout(LIMIT).unwrap();
    conn.execute(
        "UPDATE events SET event = 42 WHERE entity_id = 't1' AND seq_no = 4",
        [],
    )
    .unwrap();
    drop(conn);
    let log = SqliteEventLog::open(&path).unwrap();
    let read = timeout(
        LIMIT,
        log.events_by_id("tally", "t1", SeqNo::new(4))
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    match read {
        Err(EventLogError::Corrupt {
            location, reason, ..
        }) => {
            assert!(
                location.contains("events.db")
                    && location.contains("tally/t1")
                    && location.contains("seq_no 4"),
                "the location must name the file, the entity and the seq_no: {location}"
            );
            assert!(reason.contains("not a blob"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn the_application_id_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.db");
    drop(SqliteEventLog::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    let id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        (id, version),
        (APPLICATION_ID, eventsourced_sqlite::SCHEMA_VERSION)
    );
}

/// SQLite goes on committing to a database file that was removed while it is
/// open, and those commits vanish when the process closes it: once the file
/// is gone, appends are refused with an error that says so, never
/// acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_after_the_file_is_removed_are_refused_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("removed.db");
    let log = SqliteEventLog::open(&path).unwrap();
    log.append("t", "a", SeqNo::ZERO, &[Bytes::from("1")])
        .await
        .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(dir.path().join(format!("removed.db{suffix}")));
    }
    let error = timeout(
        LIMIT,
        log.append("t", "b", SeqNo::ZERO, &[Bytes::from("2")]),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(
        matches!(error, EventLogError::Backend { .. }) && error.to_string().contains("removed"),
        "{error}"
    );
    // A file put in its place is not the one the log writes to either.
    fs::write(&path, b"").unwrap();
    let error = timeout(
        LIMIT,
        log.append("t", "c", SeqNo::ZERO, &[Bytes::from("3")]),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(error.to_string().contains("replaced"), "{error}");
    fs::remove_file(&path).unwrap();

    // Opened anew, even while the old handle lives, the log writes to the new
    // file and holds nothing that was refused.
    let reopened = SqliteEventLog::open(&path).unwrap();
    assert_eq!(reopened.last_seq_no("t", "b").await.unwrap(), SeqNo::ZERO);
    reopened
        .append("t", "b", SeqNo::ZERO, &[Bytes::from("2")])
        .await
        .unwrap();
    assert!(
        log.append("t", "d", SeqNo::ZERO, &[Bytes::from("4")])
            .await
            .is_err()
    );
    drop((log, reopened));
    let log = SqliteEventLog::open(&path).unwrap();
    assert_eq!(log.last_seq_no("t", "b").await.unwrap(), SeqNo::new(1));
    assert_eq!(log.last_seq_no("t", "d").await.unwrap(), SeqNo::ZERO);
}
