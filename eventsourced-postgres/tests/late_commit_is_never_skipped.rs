//! The classic sequence-gap bug: transaction T1 takes position p, T2 takes
//! p + 1 and commits first; a live follower that read p + 1 moves past p and
//! never sees T1's event. Positions here are taken under a transaction-scoped
//! advisory lock held until COMMIT, so T2 cannot take a position (let alone
//! commit) before T1 commits, and the follower sees both, in order.

mod support;

use bytes::Bytes;
use eventsourced::{EventEnvelope, EventLog, Position, SeqNo};
use futures::{StreamExt, TryStreamExt};
use std::{collections::HashMap, time::Duration};
use support::TestDb;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_committing_after_a_later_one_is_not_skipped() {
    let db = TestDb::new();
    let log = db.log().await;
    let table = log.tables().events();
    let positions = log.tables().positions();
    let lock_key = log.tables().lock_key();
    let type_name = "order-test";

    let mut follower = Box::pin(log.events_by_type(type_name, Position::START));
    log.append(type_name, "first", SeqNo::ZERO, &[Bytes::from("e0")])
        .await
        .expect("append e0");
    let e0 = timeout(WAIT, follower.next())
        .await
        .expect("e0 must arrive")
        .expect("stream must not end")
        .expect("no error");
    assert_eq!(e0.event, Bytes::from("e0"));

    // T1: another writer (say another process) takes the next position and
    // is slow to commit.
    let mut raw = db.raw().await;
    let t1 = raw.transaction().await.expect("BEGIN T1");
    t1.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
        .await
        .expect("T1 takes the position lock");
    t1.execute(
        &format!(
            "WITH p AS (UPDATE {positions} SET last = last + 1 RETURNING last)
             INSERT INTO {table} (position, type_name, id, seq_no, event)
             SELECT p.last, $1, 'slow', 1, $2 FROM p"
        ),
        &[&type_name, &b"e1".as_slice()],
    )
    .await
    .expect("T1 inserts e1");

    // T2: our log appends later and would commit first if it could.
    let (log2, type2) = (log.clone(), type_name.to_owned());
    let mut t2 = tokio::spawn(async move {
        log2.append(&type2, "fast", SeqNo::ZERO, &[Bytes::from("e2")])
            .await
    });
    assert!(
        timeout(Duration::from_millis(500), &mut t2).await.is_err(),
        "T2 must wait for T1's position lock instead of committing first"
    );
    let nothing = timeout(Duration::from_millis(500), follower.next()).await;
    assert!(
        nothing.is_err(),
        "the follower must see nothing while T1 is open, got {nothing:?}"
    );

    t1.commit().await.expect("COMMIT T1");
    let t2_result = timeout(WAIT, t2)
        .await
        .expect("T2 must finish once T1 committed")
        .expect("T2 task must not panic");
    assert_eq!(t2_result.expect("T2 must succeed"), SeqNo::new(1));

    let live: Vec<EventEnvelope> = timeout(WAIT, follower.as_mut().take(2).try_collect())
        .await
        .expect("both events must arrive")
        .expect("no error");
    let seen: Vec<(&str, Bytes)> = live
        .iter()
        .map(|e| (e.id.as_str(), e.event.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![("slow", Bytes::from("e1")), ("fast", Bytes::from("e2"))],
        "the live follower must deliver the late-committing T1 event, then T2's"
    );
    assert!(e0.position < live[0].position && live[0].position < live[1].position);

    let replay: Vec<EventEnvelope> = timeout(
        WAIT,
        log.events_by_type(type_name, Position::START)
            .take(3)
            .try_collect(),
    )
    .await
    .expect("replay must deliver")
    .expect("no error");
    assert_eq!(&replay[1..], &live[..], "a replay must match the live view");
}

/// Two logs on the same table (two writer tasks and pools, as two processes
/// would have) append concurrently while a live follower reads: the follower
/// must see every committed event exactly once, in position order, and
/// exactly the table's content.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_follower_sees_every_event_of_concurrent_writers_once() {
    const ENTITIES: usize = 20;
    const APPENDS: u64 = 25;
    let db = TestDb::new();
    let log_a = db.log().await;
    let log_b = db.log().await;
    let type_name = "two-writers";
    let total = ENTITIES * usize::try_from(APPENDS).expect("small");

    let follower = tokio::spawn({
        let log = log_a.clone();
        async move {
            timeout(
                Duration::from_secs(60),
                log.events_by_type(type_name, Position::START)
                    .take(total)
                    .try_collect::<Vec<_>>(),
            )
            .await
        }
    });
    let writers: Vec<_> = (0..ENTITIES)
        .map(|entity| {
            let log = if entity % 2 == 0 {
                log_a.clone()
            } else {
                log_b.clone()
            };
            tokio::spawn(async move {
                let id = format!("e{entity}");
                for n in 0..APPENDS {
                    log.append(
                        type_name,
                        &id,
                        SeqNo::new(n),
                        &[Bytes::from(format!("{id}/{}", n + 1))],
                    )
                    .await
                    .expect("append must succeed");
                }
            })
        })
        .collect();
    for writer in writers {
        timeout(WAIT, writer)
            .await
            .expect("writers must finish")
            .expect("writer must not panic");
    }
    let seen = follower
        .await
        .expect("follower must not panic")
        .expect("the follower must see every event in time")
        .expect("the follower must not fail");
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "positions must increase"
    );
    let mut next_seq: HashMap<&str, u64> = HashMap::new();
    for envelope in &seen {
        let expected = next_seq.entry(&envelope.id).or_insert(1);
        assert_eq!(
            envelope.seq_no.get(),
            *expected,
            "{}: events must arrive once each, in seq_no order",
            envelope.id
        );
        assert_eq!(
            envelope.event,
            Bytes::from(format!("{}/{}", envelope.id, expected))
        );
        *expected += 1;
    }
    let raw = db.raw().await;
    let rows = raw
        .query(
            &format!(
                "SELECT position FROM {} WHERE type_name = $1 ORDER BY position",
                log_a.tables().events()
            ),
            &[&type_name],
        )
        .await
        .expect("count rows");
    let stored: Vec<u64> = rows
        .iter()
        .map(|r| u64::try_from(r.get::<_, i64>(0)).expect("positive"))
        .collect();
    let delivered: Vec<u64> = seen.iter().map(|e| e.position.get()).collect();
    assert_eq!(
        delivered, stored,
        "the follower must deliver exactly the stored events"
    );
}
