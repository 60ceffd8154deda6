//! The writer merges concurrent appends into shared transactions, yet each
//! append stays atomic and conflict-checked on its own; positions stay
//! gap-free; followers are woken by commits; readers never block the writer.

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, Position, SeqNo};
use eventsourced_sqlite::{SqliteConfig, SqliteError, SqliteEventLog};
use futures::{StreamExt, TryStreamExt};
use rusqlite::Connection;
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

fn event(label: impl std::fmt::Display) -> Bytes {
    Bytes::from(label.to_string())
}

async fn all_by_type(log: &SqliteEventLog, type_name: &str, n: usize) -> Vec<(u64, String, u64)> {
    timeout(
        LIMIT,
        log.events_by_type(type_name, Position::START)
            .take(n)
            .map_ok(|e| (e.position.get(), e.id, e.seq_no.get()))
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("the events arrive in time")
    .expect("events_by_type")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_conflict_never_fails_another_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = SqliteEventLog::open(dir.path().join("group.db")).unwrap();
    // 50 entities with 2 events each.
    for e in 0..50 {
        log.append("g", &format!("e{e}"), SeqNo::ZERO, &[event(1), event(2)])
            .await
            .unwrap();
    }
    // Now 200 concurrent appends: for every entity a good one (expects 2),
    // a stale one (expects 1), one from the future (expects 7) and a good
    // three-event append to a new entity.
    let mut tasks = Vec::new();
    for e in 0..50 {
        for (expected, id) in [
            (2, format!("e{e}")),
            (1, format!("e{e}")),
            (7, format!("e{e}")),
            (0, format!("new{e}")),
        ] {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let events = if id.starts_with("new") {
                    vec![event("a"), event("b"), event("c")]
                } else {
                    vec![event(format!("after {expected}"))]
                };
                let result = log.append("g", &id, SeqNo::new(expected), &events).await;
                (id, expected, result)
            }));
        }
    }
    for task in tasks {
        let (id, expected, result) = timeout(LIMIT, task).await.unwrap().unwrap();
        match (expected, result) {
            (2, Ok(last)) => assert_eq!(last, SeqNo::new(3), "{id}"),
            (0, Ok(last)) => assert_eq!(last, SeqNo::new(3), "{id}"),
            (
                1 | 7,
                Err(EventLogError::Conflict {
                    expected: e,
                    actual,
                    ..
                }),
            ) => {
                assert_eq!(e, SeqNo::new(expected));
                // The good append of the same entity may commit before or after.
                assert!(
                    actual == SeqNo::new(2) || actual == SeqNo::new(3),
                    "{id}: {actual}"
                );
            }
            (expected, result) => panic!("{id} expecting {expected}: unexpected {result:?}"),
        }
    }
    for e in 0..50 {
        let id = format!("e{e}");
        let events: Vec<_> = log
            .events_by_id("g", &id, SeqNo::ZERO)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            events,
            vec![
                (SeqNo::new(1), event(1)),
                (SeqNo::new(2), event(2)),
                (SeqNo::new(3), event("after 2"))
            ],
            "{id}: exactly the good append was written"
        );
        let new: Vec<_> = log
            .events_by_id("g", &format!("new{e}"), SeqNo::ZERO)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(new.len(), 3);
    }
    // Positions of this fresh file are exactly 1..=n: conflicts left no gaps.
    let n = 50 * 3 + 50 * 3;
    let positions: Vec<u64> = all_by_type(&log, "g", n)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        positions,
        (1..=u64::try_from(n).unwrap()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_continue_without_gaps_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reopen.db");
    {
        let log = SqliteEventLog::open(&path).unwrap();
        log.append("r", "a", SeqNo::ZERO, &[event(1), event(2)])
            .await
            .unwrap();
    }
    let log = SqliteEventLog::open(&path).unwrap();
    log.append("r", "b", SeqNo::ZERO, &[event(3)])
        .await
        .unwrap();
    log.append("r", "a", SeqNo::new(2), &[event(4)])
        .await
        .unwrap();
    let events = all_by_type(&log, "r", 4).await;
    assert_eq!(
        events,
        vec![
            (1, "a".to_owned(), 1),
            (2, "a".to_owned(), 2),
            (3, "b".to_owned(), 1),
            (4, "a".to_owned(), 3)
        ]
    );
    // Resuming after position 2 yields exactly the later events.
    let resumed: Vec<u64> = timeout(
        LIMIT,
        log.events_by_type("r", Position::new(2).next())
            .take(2)
            .map_ok(|e| e.position.get())
            .try_collect::<Vec<_>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resumed, vec![3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_are_woken_by_commits_not_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::default();
    // A poll this slow would fail the timeouts below: only the wake-up by
    // the commit can deliver in time.
    config.follow_poll_interval = Duration::from_secs(3600);
    let log = SqliteEventLog::open_with(dir.path().join("live.db"), config).unwrap();
    let mut follower = Box::pin(log.events_by_type("live", Position::START));
    for n in 1..=3u64 {
        let waiting = tokio::spawn({
            let log = log.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                log.append("live", "a", SeqNo::new(n - 1), &[event(n)])
                    .await
            }
        });
        let envelope = timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the commit must wake the follower")
            .expect("the stream is live")
            .expect("no error");
        assert_eq!((envelope.seq_no, envelope.event), (SeqNo::new(n), event(n)));
        waiting.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_see_commits_of_other_processes_by_polling() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let mut config = SqliteConfig::default();
    config.follow_poll_interval = Duration::from_millis(50);
    let log = SqliteEventLog::open_with(&path, config).unwrap();
    let mut follower = Box::pin(log.events_by_type("other", Position::START));
    // Another writer of the same file (as another process would be).
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(LIMIT).unwrap();
    other
        .execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE log_head SET last_position = last_position + 1;
             INSERT INTO events (type_name, entity_id, seq_no, position, event)
                 VALUES ('other', 'x', 1, (SELECT last_position FROM log_head), x'01');
             COMMIT;",
        )
        .unwrap();
    let envelope = timeout(Duration::from_secs(10), follower.next())
        .await
        .expect("the poll must find the other writer's event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (envelope.id.as_str(), envelope.seq_no),
        ("x", SeqNo::new(1))
    );
    // And the log's own conflict check sees it.
    let conflict = log.append("other", "x", SeqNo::ZERO, &[event(1)]).await;
    assert!(conflict.unwrap_err().is_conflict());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_read_transaction_does_not_block_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readers.db");
    let log = SqliteEventLog::open(&path).unwrap();
    log.append("t", "a", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    let reader = Connection::open(&path).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let seen: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(seen, 1);
    // The reader holds its snapshot; appends commit anyway.
    for n in 1..=20u64 {
        timeout(
            Duration::from_secs(10),
            log.append("t", "a", SeqNo::new(n), &[event(n + 1)]),
        )
        .await
        .expect("a reader must not block the writer")
        .unwrap();
    }
    let still: i64 = reader
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(still, 1, "the reader keeps its snapshot");
    reader.execute_batch("COMMIT").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_file_has_one_writer_per_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let first = SqliteEventLog::open(&path).unwrap();
    // Another spelling of the same file gets the same writer: its commits
    // wake the first handle's followers at once.
    let second = SqliteEventLog::open(dir.path().join(".").join("shared.db")).unwrap();
    let mut config = SqliteConfig::default();
    config.max_batch = 7;
    let refused = SqliteEventLog::open_with(&path, config).unwrap_err();
    assert!(
        matches!(refused, SqliteError::OpenWithOtherConfig { .. }),
        "{refused:?}"
    );
    let mut follower = Box::pin(first.events_by_type("one", Position::START));
    second
        .append("one", "a", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    let envelope = timeout(Duration::from_secs(10), follower.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(envelope.seq_no, SeqNo::new(1));
    assert_eq!(first.path(), second.path());
}

#[test]
fn config_is_serde_with_kebab_case_and_defaults() {
    let config: SqliteConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(config, SqliteConfig::default());
    let config: SqliteConfig = serde_json::from_str(
        r#"{"durability": "fast", "busy-timeout": "250ms", "max-batch": 64,
            "read-connections": 2, "follow-poll-interval": "2s"}"#,
    )
    .unwrap();
    assert_eq!(config.durability, eventsourced_sqlite::Durability::Fast);
    assert_eq!(config.busy_timeout, Duration::from_millis(250));
    assert_eq!((config.max_batch, config.read_connections), (64, 2));
    assert_eq!(config.follow_poll_interval, Duration::from_secs(2));
    assert!(serde_json::from_str::<SqliteConfig>(r#"{"durabilty": "fast"}"#).is_err());
    let mut invalid = SqliteConfig::default();
    invalid.max_batch = 0;
    let error = SqliteEventLog::open_with(":memory:", invalid).unwrap_err();
    assert!(matches!(error, SqliteError::InvalidConfig(_)), "{error:?}");
    assert!(error.to_string().contains("max-batch"));
    // Values SQLite or tokio cannot take are refused, not a panic.
    let config: SqliteConfig = serde_json::from_str(r#"{"busy-timeout": "30days"}"#).unwrap();
    let error = SqliteEventLog::open_with(":memory:", config).unwrap_err();
    assert!(error.to_string().contains("busy-timeout"), "{error}");
    let mut invalid = SqliteConfig::default();
    invalid.read_connections = usize::MAX;
    let error = SqliteEventLog::open_with(":memory:", invalid).unwrap_err();
    assert!(error.to_string().contains("read-connections"), "{error}");
}

#[test]
fn public_types_are_send_sync_clone_debug() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    fn error<T: Send + Sync + std::error::Error + 'static>() {}
    check::<SqliteEventLog>();
    check::<eventsourced_sqlite::SqliteSnapshotStore>();
    check::<SqliteConfig>();
    error::<SqliteError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_another_process_are_seen_by_the_conflict_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two-writers.db");
    let log = SqliteEventLog::open(&path).unwrap();
    log.append("w", "x", SeqNo::ZERO, &[event(1)])
        .await
        .unwrap();
    // Another writer of the file appends event 2 of the same entity.
    let other = Connection::open(&path).unwrap();
    other.busy_timeout(LIMIT).unwrap();
    other
        .execute_batch(
            "BEGIN IMMEDIATE;
             UPDATE log_head SET last_position = last_position + 1;
             INSERT INTO events (type_name, entity_id, seq_no, position, event)
                 VALUES ('w', 'x', 2, (SELECT last_position FROM log_head), x'02');
             COMMIT;",
        )
        .unwrap();
    match log.append("w", "x", SeqNo::new(1), &[event(2)]).await {
        Err(EventLogError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (SeqNo::new(1), SeqNo::new(2)))
        }
        other => panic!("the other writer's event must make this a conflict: {other:?}"),
    }
    assert_eq!(
        log.append("w", "x", SeqNo::new(2), &[event(3)])
            .await
            .unwrap(),
        SeqNo::new(3)
    );
    let positions: Vec<u64> = all_by_type(&log, "w", 3)
        .await
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
}
