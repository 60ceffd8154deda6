//! Appends that come one at a time run on the caller's task, on the writer's
//! connection, instead of through the writer task. They must keep every
//! guarantee of the writer: a stale append is a typed conflict that writes
//! nothing; a caller that stops waiting mid-statement leaves the connection
//! usable, the entity's events contiguous and the followers woken; a caller
//! that stalls blocks no other append.

mod support;

use bytes::Bytes;
use eventsourced::{EventLog, EventLogError, Position, SeqNo};
use futures::{StreamExt, TryStreamExt};
use std::{
    task::Poll,
    time::{Duration, Instant},
};
use support::{TestDb, ev};
use tokio::time::{sleep, timeout};

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
        // Give up on the append after polling it one to six times, with a
        // scheduler turn between polls: before its statement is sent, while
        // it runs, or (rarely) not at all. Polls rather than a timeout, whose
        // millisecond ticks outlast most appends here.
        let maybe = [ev(&format!("maybe-{round}"))];
        let mut append = Box::pin(log.append(t, "x", last, &maybe));
        let mut outcome = None;
        for _ in 0..=round % 6 {
            if let Poll::Ready(result) = futures::poll!(append.as_mut()) {
                outcome = Some(result);
                break;
            }
            tokio::task::yield_now().await;
        }
        drop(append);
        match outcome {
            Some(result) => last = result.expect("an append awaited to the end must succeed"),
            None => {
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

/// A caller that gives up while its direct statement waits in the server
/// leaves a statement that commits later: the followers, of this log and of
/// another process, are woken for it as the writer would wake them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_direct_append_that_commits_wakes_followers() {
    let mut db = TestDb::new();
    // Followers poll only once a minute: an event must come by NOTIFY / wake.
    db.config.poll_interval = Duration::from_secs(60);
    let log = db.log().await;
    let other = db.log().await; // another "process"
    let t = "quiet";

    let mut remote = Box::pin(other.events_by_type(t, Position::START));
    let mut local = Box::pin(log.events_by_type(t, Position::START));
    // Let the first (empty) reads and the LISTENs happen.
    assert!(
        timeout(Duration::from_millis(500), remote.next())
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_millis(500), local.next())
            .await
            .is_err()
    );

    // Control: an append through the writer (the log's first) wakes both.
    log.append(t, "w", SeqNo::ZERO, &[ev("w1")])
        .await
        .expect("w1");
    for s in [&mut remote, &mut local] {
        let e = timeout(Duration::from_secs(10), s.next())
            .await
            .expect("the writer's commit wakes followers")
            .expect("not ended")
            .expect("no error");
        assert_eq!(e.id, "w");
    }
    // The writer's last batch held one request: the next append comes alone.
    sleep(Duration::from_millis(100)).await;
    // Both followers caught up and now wait (for a wake, or the 60s poll).
    assert!(
        timeout(Duration::from_millis(300), remote.next())
            .await
            .is_err()
    );
    assert!(
        timeout(Duration::from_millis(300), local.next())
            .await
            .is_err()
    );

    // Hold the position lock so the direct statement waits in the server.
    let mut raw = db.raw().await;
    let tx = raw.transaction().await.expect("begin");
    tx.execute(
        &format!("SELECT pg_advisory_xact_lock({})", log.tables().lock_key()),
        &[],
    )
    .await
    .expect("lock");

    // Expected 0 is always a known predecessor: the direct path. Give up on it.
    let abandoned = timeout(
        Duration::from_millis(500),
        log.append(t, "x", SeqNo::ZERO, &[ev("x1")]),
    )
    .await;
    assert!(
        abandoned.is_err(),
        "the append must still be waiting for the lock"
    );

    // Release the lock: the abandoned statement commits.
    tx.commit().await.expect("commit");
    let mut stored = SeqNo::ZERO;
    for _ in 0..100 {
        stored = log.last_seq_no(t, "x").await.expect("last_seq_no");
        if stored == SeqNo::new(1) {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored, SeqNo::new(1), "the abandoned append committed");

    // A committed event: live followers must be told (poll is 60s).
    let got_local = timeout(Duration::from_secs(5), local.next()).await;
    let got_remote = timeout(Duration::from_secs(5), remote.next()).await;
    assert!(
        got_local.is_ok(),
        "a follower of the same log was never woken for the committed event x1"
    );
    assert!(
        got_remote.is_ok(),
        "a follower in another process got no NOTIFY for the committed event x1"
    );
}

/// A direct append's future that is kept but not polled (e.g. pinned in a
/// `select!` loop while another branch runs) holds one connection, and no
/// lock: the other appends of the log go on, on the writer's second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpolled_direct_append_blocks_no_other_append() {
    let mut db = TestDb::new();
    db.config.statement_timeout = Duration::from_secs(2);
    let log = db.log().await;
    let t = "stall";
    log.append(t, "w", SeqNo::ZERO, &[ev("w1")])
        .await
        .expect("w1");
    sleep(Duration::from_millis(100)).await; // the next append comes alone

    let x1 = [ev("x1")];
    let held = log.append(t, "x", SeqNo::ZERO, &x1);
    let mut held = Box::pin(held);
    // Poll it once: it takes the writer's connection and sends its statement.
    assert!(futures::poll!(&mut held).is_pending());

    // Another entity's append, awaited to the end, well past the statement timeout.
    let other = timeout(
        Duration::from_secs(10),
        log.append(t, "y", SeqNo::ZERO, &[ev("y1")]),
    )
    .await;
    drop(held);
    assert!(
        other.is_ok(),
        "an append of another entity hung for 10s (statement timeout 2s) behind an unpolled one"
    );
}

/// A PostgreSQL backend paused with SIGSTOP, resumed with SIGCONT when
/// dropped (also when the test fails).
struct PausedBackend(i32);

impl PausedBackend {
    fn pause(pid: i32) -> Self {
        signal("STOP", pid);
        PausedBackend(pid)
    }
}

impl Drop for PausedBackend {
    fn drop(&mut self) {
        signal("CONT", self.0);
    }
}

fn signal(name: &str, pid: i32) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// With both of the writer's connections out, one held by the task that
/// waits for an abandoned direct append and one by a stalled direct append,
/// the writer waits for the pool; when the first comes back to the idle
/// slot, the writer takes it at once instead of timing out on the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_takes_a_connection_given_back_while_it_waits() {
    let mut db = TestDb::new();
    db.config.statement_timeout = Duration::from_secs(3);
    let log = db.log().await;
    let raw = db.raw().await;
    let t = "slot";
    let app = db.config.application_name.clone();

    // w1 through the writer, then w2 direct, on the writer's first connection.
    log.append(t, "w", SeqNo::ZERO, &[ev("w1")])
        .await
        .expect("w1");
    sleep(Duration::from_millis(100)).await;
    log.append(t, "w", SeqNo::new(1), &[ev("w2")])
        .await
        .expect("w2");
    let rows = raw
        .query(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'WITH lock%'",
            &[&app],
        )
        .await
        .expect("pg_stat_activity");
    assert_eq!(rows.len(), 1, "one connection ran the fast append");
    let paused = PausedBackend::pause(rows[0].get(0));

    // x1, direct on that connection, is abandoned mid-statement: the task
    // that settles it holds the connection while the backend is paused.
    let abandoned = timeout(
        Duration::from_millis(300),
        log.append(t, "x", SeqNo::ZERO, &[ev("x1")]),
    )
    .await;
    assert!(abandoned.is_err(), "x1 must be abandoned mid-statement");
    // y1 goes to the writer, which opens its second connection; z1 finds
    // it idle, so the next append comes alone again.
    for id in ["y", "z"] {
        timeout(WAIT, log.append(t, id, SeqNo::ZERO, &[ev("1")]))
            .await
            .expect("no hang")
            .expect("appended on the second connection");
    }
    sleep(Duration::from_millis(100)).await;

    // h1: direct on the second connection, kept but not polled.
    let h1 = [ev("h1")];
    let mut held = Box::pin(log.append(t, "h", SeqNo::ZERO, &h1));
    assert!(futures::poll!(&mut held).is_pending());
    // v1 goes to the writer: the slot is empty, both connections are out.
    let other = log.clone();
    let v = tokio::spawn(async move { other.append(t, "v", SeqNo::ZERO, &[ev("v1")]).await });
    sleep(Duration::from_millis(300)).await;

    // The paused statement ends: its connection goes back to the slot. (The
    // writer's wait on the pool would time out, failing v1, 2.7 s later.)
    drop(paused);
    let started = Instant::now();
    let v = timeout(WAIT, v)
        .await
        .expect("v1 must not hang")
        .expect("join");
    let took = started.elapsed();
    drop(held);
    assert_eq!(
        v.expect("v1 must be appended on the connection given back"),
        SeqNo::new(1),
        "after {took:?}"
    );
}
