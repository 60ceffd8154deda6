//! A failed append fails every command of its batch with the cause, stops the
//! entity, and every handle reports that cause afterwards.

mod support;

use eventsourced::{
    EventLog, EventLogError, EventSourcedExt, HandleCommandError, NoopSnapshotStore, SeqNo,
    SerdeJson,
};
use std::time::Duration;
use support::{Counter, Get, Increase, InstrumentedLog};
use tokio::time::timeout;

fn assert_disk_on_fire(error: &HandleCommandError) {
    match error.append_error() {
        Some(EventLogError::Backend { source, .. }) => {
            assert_eq!(source.to_string(), "disk on fire")
        }
        other => panic!("expected the append's cause, got {other:?} in {error}"),
    }
    assert!(
        error.to_string().contains("disk on fire"),
        "the message must name the cause: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_append_fails_the_batch_and_later_sends_report_the_cause() {
    let log = InstrumentedLog::failing_at(2);
    let counter = Counter::default()
        .entity()
        .max_batch(1000)
        .spawn("c".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
        .await
        .unwrap();
    assert_eq!(counter.handle_command(Increase(1)).await.unwrap(), Ok(1));

    // Many concurrent commands: the second append fails; all of its batch fail.
    let senders: Vec<_> = (0..50)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move { counter.handle_command(Increase(1)).await })
        })
        .collect();
    let mut failed = 0;
    for sender in senders {
        match timeout(Duration::from_secs(10), sender)
            .await
            .expect("no command may hang")
            .unwrap()
        {
            Ok(reply) => panic!("no command may succeed after the failed append, got {reply:?}"),
            Err(error) => {
                assert_disk_on_fire(&error);
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 50);

    // Later sends, on this and on fresh clones, report the same cause.
    let clone = counter.clone();
    let later = timeout(Duration::from_secs(10), clone.handle_command(Get))
        .await
        .expect("no hang")
        .unwrap_err();
    assert_disk_on_fire(&later);
    assert_disk_on_fire(&counter.stopped().expect("the entity is stopped"));
    assert_eq!(
        log.last_seq_no("counter", "c").await.unwrap(),
        SeqNo::new(1),
        "the failed batch wrote nothing"
    );
}
