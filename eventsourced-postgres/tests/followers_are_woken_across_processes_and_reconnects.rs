//! Live streams are woken by `NOTIFY` from another process, and stay woken
//! after the connections involved were terminated (a restart, a failover):
//! the follower's `LISTEN` connection reconnects, and the writer's
//! notifications go out on new connections. The followers here poll only
//! once a minute, so an event that arrives sooner came by `NOTIFY`.

mod support;

use eventsourced::{EventEnvelope, EventLog, EventLogError, Position, SeqNo};
use eventsourced_postgres::PostgresEventLog;
use futures::StreamExt;
use std::time::Duration;
use support::{TestDb, ev};
use tokio::time::timeout;

/// A writer log (application name `<schema>_w`) and a follower of type "n"
/// on another log (`<schema>_r`, polling only every 60 s, so that only a
/// NOTIFY wakes it in time), caught up with nothing; `db.config` is left
/// with the follower's application name.
async fn writer_and_idle_follower(
    db: &mut TestDb,
) -> (
    PostgresEventLog,
    std::pin::Pin<Box<impl futures::Stream<Item = Result<EventEnvelope, EventLogError>> + use<>>>,
) {
    db.config.application_name = format!("{}_w", db.config.schema);
    let writer = db.log().await;
    db.config.poll_interval = Duration::from_secs(60);
    db.config.application_name = format!("{}_r", db.config.schema);
    let reader = db.log().await;
    let mut follower = Box::pin(reader.events_by_type("n", Position::START));
    assert!(
        timeout(Duration::from_millis(500), follower.next())
            .await
            .is_err()
    );
    (writer, follower)
}

/// The follower's LISTEN connection is terminated; once it reconnects, an
/// append by another log must wake the follower by NOTIFY (poll is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listen_connection_reconnects_and_notify_still_wakes() {
    let mut db = TestDb::new();
    let (writer, mut follower) = writer_and_idle_follower(&mut db).await;
    let raw = db.raw().await;
    for round in 1..=3_u64 {
        let killed = raw
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = $1 AND query ILIKE 'LISTEN%'",
                &[&db.config.application_name],
            )
            .await
            .expect("kill listener");
        assert_eq!(killed, 1, "round {round}: one LISTEN connection");
        // Let it reconnect (backoff 100 ms, growing while it fails).
        tokio::time::sleep(Duration::from_secs(1)).await;
        writer
            .append("n", "a", SeqNo::new(round - 1), &[ev("x")])
            .await
            .expect("append");
        let got = timeout(Duration::from_secs(10), follower.next())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no wake after the listener was terminated"))
            .expect("open")
            .expect("ok");
        assert_eq!(got.seq_no, SeqNo::new(round));
    }
}

/// The writer's idle pooled connections are terminated (a restart or
/// failover); its next commit's NOTIFY must still reach the follower of
/// another log, as of another process (poll is 60 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_reaches_another_process_after_the_writers_connections_were_terminated() {
    let mut db = TestDb::new();
    let writer_app = format!("{}_w", db.config.schema);
    let (writer, mut follower) = writer_and_idle_follower(&mut db).await;
    let raw = db.raw().await;
    let mut missed = Vec::new();
    for round in 1..=5_u64 {
        raw.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1 AND state = 'idle'",
            &[&writer_app],
        )
        .await
        .expect("kill");
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The writer's own connection was terminated too: retry on an
        // unknown-outcome error after checking what is stored.
        let mut expected = SeqNo::new(round - 1);
        loop {
            match writer.append("n", "a", expected, &[ev("x")]).await {
                Ok(_) => break,
                Err(EventLogError::Conflict { actual, .. }) => {
                    expected = actual;
                    if actual == SeqNo::new(round) {
                        break;
                    }
                }
                Err(_) => {
                    let last = writer.last_seq_no("n", "a").await.expect("last");
                    if last == SeqNo::new(round) {
                        break;
                    }
                    expected = last;
                }
            }
        }
        match timeout(Duration::from_secs(10), follower.next()).await {
            Ok(got) => assert_eq!(got.expect("open").expect("ok").seq_no, SeqNo::new(round)),
            Err(_) => {
                missed.push(round);
                // Let the 60 s poll deliver it, to keep the rounds in step.
                let got = timeout(Duration::from_secs(70), follower.next())
                    .await
                    .expect("poll")
                    .expect("open")
                    .expect("ok");
                assert_eq!(got.seq_no, SeqNo::new(round));
            }
        }
    }
    assert!(
        missed.is_empty(),
        "rounds whose NOTIFY was lost (follower woke only by its 60 s poll): {missed:?}"
    );
}

/// Set (to the schema) in the child process that writes.
const ROLE: &str = "EVENTSOURCED_POSTGRES_CHILD_WRITER_SCHEMA";

/// The child process of [`another_process_wakes_a_follower_by_notify`]:
/// appends 20 events one by one (each its own commit), then exits. Does
/// nothing when run as a test of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_writer() {
    let Ok(schema) = std::env::var(ROLE) else {
        return;
    };
    let mut config =
        eventsourced_postgres::PostgresConfig::from_url(&support::database_url()).expect("url");
    config.schema = schema;
    config.pool_size = 3;
    let log = eventsourced_postgres::PostgresEventLog::new(config)
        .await
        .expect("child log");
    for n in 0..20_u64 {
        log.append("p", &format!("e{}", n % 3), SeqNo::new(n / 3), &[ev("c")])
            .await
            .expect("child append");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last NOTIFY go out before the process ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A follower is woken by the commits of a writer in another OS process
/// (this test binary run again as [`child_writer`]) and sees its 20 events in
/// position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_wakes_a_follower_by_notify() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let mut db = TestDb::new();
    db.config.poll_interval = Duration::from_secs(60);
    let log = db.log().await;
    let mut follower = Box::pin(log.events_by_type("p", Position::START));
    assert!(
        timeout(Duration::from_millis(500), follower.next())
            .await
            .is_err()
    );
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_writer",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE, &db.config.schema)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let event = timeout(Duration::from_secs(10), follower.next())
            .await
            .unwrap_or_else(|_| panic!("no wake from another process after {} events", seen.len()))
            .expect("open")
            .expect("ok");
        seen.push(event.position.get());
    }
    assert!(child.wait().await.expect("child").success());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}
