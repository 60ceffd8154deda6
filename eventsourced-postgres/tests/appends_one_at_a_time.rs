//! Appends that come one at a time run on the caller's task, on the writer's
//! connection, instead of through the writer task. They must keep every
//! guarantee of the writer: a stale append is a typed conflict that writes
//! nothing, and a caller that stops waiting mid-statement leaves the
//! connection usable and the entity's events contiguous.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, SeqNo};
use futures::TryStreamExt;
use std::time::Duration;
use support::{TestDb, ev};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

async fn stored(log: &impl EventLog, t: &str, id: &str) -> Vec<(SeqNo, Bytes)> {
    timeout(WAIT, log.events_by_id(t, id, SeqNo::new(1)).try_collect())
        .await
        .expect("the read must not hang")
        .expect("the read must succeed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_append_alone_conflicts_and_writes_nothing() {
    let db = TestDb::new();
    let log_a = db.log().await;
    let log_b = db.log().await;
    let t = "alone";

    // One append after another: the appends come alone.
    let mut last = SeqNo::ZERO;
    for n in 1..=5 {
        last = timeout(WAIT, log_a.append(t, "x", last, &[ev(&format!("a{n}"))]))
            .await
            .expect("append must not hang")
            .expect("append must succeed");
    }
    assert_eq!(last, SeqNo::new(5));

    // B appends behind A's back; A's next append is stale.
    let b = log_b.append(t, "x", SeqNo::new(5), &[ev("b6")]).await;
    assert_eq!(b.expect("b6"), SeqNo::new(6));
    let stale = timeout(WAIT, log_a.append(t, "x", SeqNo::new(5), &[ev("a6")]))
        .await
        .expect("append must not hang");
    match stale {
        Err(EventLogError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, SeqNo::new(5));
            assert_eq!(actual, SeqNo::new(6));
        }
        other => panic!("a stale append must conflict, got {other:?}"),
    }

    // A continues from what is stored.
    let next = log_a.append(t, "x", SeqNo::new(6), &[ev("a7")]).await;
    assert_eq!(next.expect("a7"), SeqNo::new(7));
    let events = stored(&log_a, t, "x").await;
    let payloads: Vec<&[u8]> = events.iter().map(|(_, bytes)| &bytes[..]).collect();
    assert_eq!(
        payloads,
        [&b"a1"[..], b"a2", b"a3", b"a4", b"a5", b"b6", b"a7"]
    );
    let seq_nos: Vec<u64> = events.iter().map(|(seq_no, _)| seq_no.get()).collect();
    assert_eq!(seq_nos, (1..=7).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_abandoned_mid_statement_leave_the_log_usable() {
    let db = TestDb::new();
    let log = db.log().await;
    let t = "abandoned";
    let mut last = log
        .append(t, "x", SeqNo::ZERO, &[ev("first")])
        .await
        .expect("first append");

    let mut abandoned = 0;
    for round in 0..60_u64 {
        // Give up on the append after a growing few microseconds: before it
        // is sent, while the statement runs, or not at all.
        let patience = Duration::from_micros(round * 10);
        let maybe = [ev(&format!("maybe-{round}"))];
        let append = log.append(t, "x", last, &maybe);
        match tokio::time::timeout(patience, append).await {
            Ok(result) => last = result.expect("an append awaited to the end must succeed"),
            Err(_) => {
                abandoned += 1;
                // Its statement may still commit: ask the log what is stored.
                last = timeout(WAIT, log.last_seq_no(t, "x"))
                    .await
                    .expect("last_seq_no must not hang")
                    .expect("last_seq_no must succeed");
            }
        }
        // The next append, awaited, must succeed on top of what is stored. An
        // abandoned statement may still commit after the read above: then
        // it conflicts, naming the stored seq_no, and goes on from there.
        let sure = [ev(&format!("sure-{round}"))];
        let mut attempts = 0;
        last = loop {
            attempts += 1;
            let appended = timeout(WAIT, log.append(t, "x", last, &sure))
                .await
                .expect("an append after an abandoned one must not hang");
            match appended {
                Ok(seq_no) => break seq_no,
                Err(EventLogError::Conflict { actual, .. }) if attempts < 3 && actual > last => {
                    last = actual;
                }
                Err(error) => panic!("an append after an abandoned one must succeed: {error:?}"),
            }
        };
    }
    assert!(
        abandoned > 0,
        "no append was abandoned: the test tested nothing"
    );

    let events = stored(&log, t, "x").await;
    let seq_nos: Vec<u64> = events.iter().map(|(seq_no, _)| seq_no.get()).collect();
    assert_eq!(seq_nos, (1..=last.get()).collect::<Vec<_>>());
    for round in 0..60 {
        let sure = format!("sure-{round}");
        let found = events
            .iter()
            .filter(|(_, bytes)| bytes[..] == *sure.as_bytes());
        assert_eq!(found.count(), 1, "{sure} must be stored exactly once");
    }
}
