//! Two logs on one table (as two processes): each remembers which events it
//! has seen stored and skips re-checking them, so a write by the other log
//! must still turn a stale append into a typed conflict that writes nothing,
//! without failing the other appends of the same group commit.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, SeqNo};
use futures::TryStreamExt;
use std::time::Duration;
use support::{TestDb, ev};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_by_another_log_makes_a_stale_append_conflict() {
    let db = TestDb::new();
    let log_a = db.log().await;
    let log_b = db.log().await;
    let t = "cross";

    assert_eq!(
        log_a
            .append(t, "x", SeqNo::ZERO, &[ev("a1")])
            .await
            .expect("a1"),
        SeqNo::new(1)
    );
    // B appends behind A's back.
    assert_eq!(
        log_b.last_seq_no(t, "x").await.expect("last"),
        SeqNo::new(1)
    );
    assert_eq!(
        log_b
            .append(t, "x", SeqNo::new(1), &[ev("b2"), ev("b3")])
            .await
            .expect("b2"),
        SeqNo::new(3)
    );

    // A still believes the entity ends at 1; its append is stale. Other
    // entities' appends are sent at the same moment and must succeed.
    let others: Vec<_> = (0..20)
        .map(|n| {
            let log = log_a.clone();
            tokio::spawn(async move {
                log.append(t, &format!("other-{n}"), SeqNo::ZERO, &[ev("o1"), ev("o2")])
                    .await
            })
        })
        .collect();
    let stale = log_a
        .append(
            t,
            "x",
            SeqNo::new(1),
            &[ev("stale-2"), ev("stale-3"), ev("stale-4")],
        )
        .await;
    match stale {
        Err(EventLogError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (SeqNo::new(1), SeqNo::new(3)));
        }
        other => panic!("a stale append must be a Conflict, got {other:?}"),
    }
    for other in others {
        let result = timeout(WAIT, other)
            .await
            .expect("no hang")
            .expect("no panic");
        assert_eq!(
            result.expect("other entities are not affected"),
            SeqNo::new(2)
        );
    }
    let stored: Vec<(SeqNo, Bytes)> = log_a
        .events_by_id(t, "x", SeqNo::new(1))
        .try_collect()
        .await
        .expect("read");
    assert_eq!(
        stored,
        vec![
            (SeqNo::new(1), ev("a1")),
            (SeqNo::new(2), ev("b2")),
            (SeqNo::new(3), ev("b3"))
        ],
        "the stale append must write nothing"
    );
    // After the conflict A knows better and can continue.
    assert_eq!(
        log_a
            .append(t, "x", SeqNo::new(3), &[ev("a4")])
            .await
            .expect("a4"),
        SeqNo::new(4)
    );
    // A first-event race between the logs has one winner.
    let (a, b) = ([ev("a")], [ev("b")]);
    let (ra, rb) = tokio::join!(
        log_a.append(t, "fresh", SeqNo::ZERO, &a),
        log_b.append(t, "fresh", SeqNo::ZERO, &b),
    );
    assert_eq!(
        usize::from(ra.is_ok()) + usize::from(rb.is_ok()),
        1,
        "exactly one first event wins: {ra:?} {rb:?}"
    );
    assert!(ra.as_ref().err().is_none_or(EventLogError::is_conflict));
    assert!(rb.as_ref().err().is_none_or(EventLogError::is_conflict));
}
