//! The read side at its edges: odd ids and type names round-trip (or are
//! refused before anything is written), `events_by_id` starts at any seq_no,
//! dropped or held streams leak no connection and never hang, coalesced
//! lookups answer each key, and two logs in one schema stay apart.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, Position, SeqNo};
use eventsourced_postgres::{MAX_ID_LEN, MAX_TYPE_NAME_LEN, PostgresEventLog};
use futures::{StreamExt, TryStreamExt};
use std::time::Duration;
use support::{TestDb, ev};
use tokio::time::timeout;

/// Ids with dots, spaces, wildcards, quotes, control characters and
/// multi-byte text, up to the longest allowed, and type names likewise,
/// round-trip through `append`, `last_seq_no`, `events_by_id` and
/// `events_by_type`; empty ones, NUL characters and over-long ones are
/// refused as `InvalidId` by every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_ids_and_type_names_round_trip_or_are_refused() {
    let db = TestDb::new();
    let log = db.log().await;
    let long_id = "é".repeat(MAX_ID_LEN / 2);
    let long_type = "t".repeat(MAX_TYPE_NAME_LEN);
    let ids = [
        "a.b",
        "a b",
        " ",
        "ü-ñ-日本-🦀",
        "*",
        ">",
        "a.*.>",
        "\t\n",
        "'; DROP",
        "\\",
        "%_",
        &long_id,
    ];
    for t in ["odd", "t.y pe*>", "🦀", &long_type] {
        for (n, id) in ids.iter().enumerate() {
            log.append(t, id, SeqNo::ZERO, &[Bytes::from(format!("{n}"))])
                .await
                .unwrap_or_else(|e| panic!("append {t:?}/{id:?}: {e}"));
            assert_eq!(log.last_seq_no(t, id).await.expect("last"), SeqNo::new(1));
            let back: Vec<_> = log
                .events_by_id(t, id, SeqNo::ZERO)
                .try_collect()
                .await
                .expect("by id");
            assert_eq!(back, vec![(SeqNo::new(1), Bytes::from(format!("{n}")))]);
        }
        let by_type: Vec<_> = log
            .events_by_type(t, Position::START)
            .take(ids.len())
            .try_collect()
            .await
            .expect("by type");
        let got: Vec<_> = by_type.iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, ids.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    }
    let too_long_id = "i".repeat(MAX_ID_LEN + 1);
    let too_long_type = "t".repeat(MAX_TYPE_NAME_LEN + 1);
    for (t, id) in [
        ("odd", "a\0b"),
        ("o\0dd", "a"),
        ("odd", ""),
        ("", "a"),
        ("odd", too_long_id.as_str()),
        (too_long_type.as_str(), "a"),
    ] {
        let e = log.append(t, id, SeqNo::ZERO, &[ev("x")]).await;
        assert!(
            matches!(e, Err(EventLogError::InvalidId { .. })),
            "{t:.20?}/{id:.20?}: {e:?}"
        );
        let e = log.last_seq_no(t, id).await;
        assert!(matches!(e, Err(EventLogError::InvalidId { .. })), "{e:?}");
        let e: Result<Vec<_>, _> = log.events_by_id(t, id, SeqNo::ZERO).try_collect().await;
        assert!(matches!(e, Err(EventLogError::InvalidId { .. })), "{e:?}");
    }
    for t in [too_long_type.as_str(), "a\0b", ""] {
        let e = Box::pin(log.events_by_type(t, Position::START))
            .next()
            .await;
        assert!(
            matches!(e, Some(Err(EventLogError::InvalidId { .. }))),
            "{e:?}"
        );
    }
}

/// `events_by_id` yields the events from `from` on (0 and 1 both mean all),
/// nothing from beyond the last one, and nothing for an unknown entity,
/// whose last seq_no is 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_by_id_reads_from_any_seq_no() {
    let db = TestDb::new();
    let log = db.log().await;
    log.append("e", "a", SeqNo::ZERO, &[ev("1"), ev("2"), ev("3")])
        .await
        .expect("append");
    let read = |from: u64| {
        log.events_by_id("e", "a", SeqNo::new(from))
            .map_ok(|(s, _)| s.get())
            .try_collect::<Vec<_>>()
    };
    assert_eq!(read(0).await.expect("read"), [1, 2, 3]);
    assert_eq!(read(1).await.expect("read"), [1, 2, 3]);
    assert_eq!(read(3).await.expect("read"), [3]);
    for from in [4, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        assert_eq!(read(from).await.expect("read"), Vec::<u64>::new(), "{from}");
    }
    let none: Vec<_> = log
        .events_by_id("e", "unknown", SeqNo::ZERO)
        .try_collect()
        .await
        .expect("unknown");
    assert!(none.is_empty());
    assert_eq!(
        log.last_seq_no("e", "unknown").await.expect("last"),
        SeqNo::ZERO
    );
}

/// Streams dropped after their first item, or while their query is in
/// flight, give their connection back: after many of them every read still
/// works and answers in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_leak_no_connection() {
    let mut db = TestDb::new();
    db.config.statement_timeout = Duration::from_secs(5);
    let log = db.log().await;
    let events: Vec<Bytes> = (0..2000)
        .map(|n| Bytes::from(vec![b'x'; 100 + n % 7]))
        .collect();
    log.append("drop", "a", SeqNo::ZERO, &events)
        .await
        .expect("append");
    for _ in 0..50 {
        let mut s = Box::pin(log.events_by_id("drop", "a", SeqNo::ZERO));
        let _ = s.next().await.expect("one").expect("ok");
        drop(s);
        let mut t = Box::pin(log.events_by_type("drop", Position::START));
        let _ = t.next().await.expect("one").expect("ok");
        drop(t);
        // Dropped while its fetch is in flight.
        let mut u = Box::pin(log.events_by_type("drop", Position::START));
        let _ = timeout(Duration::from_micros(200), u.next()).await;
        drop(u);
        let mut v = Box::pin(log.events_by_id("drop", "a", SeqNo::ZERO));
        let _ = timeout(Duration::from_micros(200), v.next()).await;
        drop(v);
    }
    let all: Vec<_> = timeout(
        Duration::from_secs(20),
        log.events_by_id("drop", "a", SeqNo::ZERO)
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("no hang")
    .expect("reads still work");
    assert_eq!(all.len(), 2000);
    for seq in 0..4 {
        let got: Vec<_> = log
            .events_by_id("drop", "a", SeqNo::new(1999 + seq))
            .try_collect()
            .await
            .expect("read after drops");
        assert_eq!(got.len() as u64, 2u64.saturating_sub(seq));
    }
    assert_eq!(
        log.last_seq_no("drop", "a").await.expect("last"),
        SeqNo::new(2000)
    );
}

/// A stream that holds a pooled connection while other reads wait for the
/// pool makes them answer (or time out with an error) within the statement
/// timeout, never hang; once it is dropped they answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_exhaust_the_pool_with_a_timeout_not_a_hang() {
    let mut db = TestDb::new();
    db.config.pool_size = 2;
    db.config.statement_timeout = Duration::from_secs(2);
    let log = db.log().await;
    let events: Vec<Bytes> = (0..5000).map(|_| Bytes::from(vec![b'x'; 200])).collect();
    log.append("h", "a", SeqNo::ZERO, &events)
        .await
        .expect("append");
    let mut held = Box::pin(log.events_by_id("h", "a", SeqNo::ZERO));
    let _ = held.next().await.expect("one").expect("ok");
    let read = timeout(Duration::from_secs(15), log.last_seq_no("h", "a")).await;
    assert!(
        read.is_ok(),
        "last_seq_no hung while a stream held the pool"
    );
    drop(held);
    let read = timeout(Duration::from_secs(15), log.last_seq_no("h", "a"))
        .await
        .expect("no hang");
    assert_eq!(read.expect("after the stream is dropped"), SeqNo::new(5000));
}

/// Thousands of concurrent `last_seq_no` lookups, coalesced into a few
/// queries, each get their own entity's answer (0 for unknown ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_last_seq_no_lookups_answer_each_key() {
    let db = TestDb::new();
    let log = db.log().await;
    for n in 0..20_u64 {
        let events: Vec<Bytes> = (0..=n).map(|_| ev("e")).collect();
        log.append("l", &format!("id-{n}"), SeqNo::ZERO, &events)
            .await
            .expect("append");
    }
    let lookups = (0..3000_u64).map(|k| {
        let log = log.clone();
        async move {
            let n = k % 25;
            let got = log
                .last_seq_no("l", &format!("id-{n}"))
                .await
                .expect("last");
            let want = if n < 20 { n + 1 } else { 0 };
            assert_eq!(got, SeqNo::new(want), "id-{n}");
        }
    });
    timeout(Duration::from_secs(60), futures::future::join_all(lookups))
        .await
        .expect("no hang");
}

/// Two logs on different tables of one schema keep their events, positions,
/// notification channels and lock keys apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tables_in_one_schema_stay_apart() {
    let db = TestDb::new();
    let mut config_b = db.config.clone();
    config_b.events_table = "other_events".to_owned();
    config_b.snapshots_table = "other_snapshots".to_owned();
    let a = db.log().await;
    let b = PostgresEventLog::new(config_b).await.expect("b");
    b.setup().await.expect("setup b");
    a.append("t", "x", SeqNo::ZERO, &[ev("a")])
        .await
        .expect("a");
    b.append("t", "x", SeqNo::ZERO, &[ev("b"), ev("b2")])
        .await
        .expect("b");
    assert_eq!(a.last_seq_no("t", "x").await.expect("a"), SeqNo::new(1));
    assert_eq!(b.last_seq_no("t", "x").await.expect("b"), SeqNo::new(2));
    let mut from_a = Box::pin(a.events_by_type("t", Position::START));
    let only = timeout(Duration::from_secs(5), from_a.next())
        .await
        .expect("a's event")
        .expect("open")
        .expect("ok");
    assert_eq!((only.seq_no, only.event), (SeqNo::new(1), ev("a")));
    let more = timeout(Duration::from_secs(1), from_a.next()).await;
    assert!(more.is_err(), "b's events reached a: {more:?}");
    assert_ne!(a.tables().channel(), b.tables().channel());
    assert_ne!(a.tables().lock_key(), b.tables().lock_key());
}
