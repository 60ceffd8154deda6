//! Concurrent commands to one entity are handled in batches: one append for
//! many commands, each reply showing the state right after its own events.

mod support;

use eventsourced::{EventLog, EventSourcedExt, NoopSnapshotStore, SeqNo, SerdeJson};
use std::collections::HashSet;
use support::{Counter, Get, Increase, IncreaseAll, InstrumentedLog};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_share_appends_and_get_correct_replies() {
    const SENDERS: u64 = 64;
    const PER_SENDER: u64 = 10_000 / SENDERS + 1;
    let log = InstrumentedLog::default();
    let counter = Counter::default()
        .entity()
        .spawn("hot".to_owned(), log.clone(), NoopSnapshotStore, SerdeJson)
        .await
        .unwrap();

    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut replies = Vec::new();
                for _ in 0..PER_SENDER {
                    replies.push(counter.handle_command(Increase(1)).await.unwrap().unwrap());
                }
                replies
            })
        })
        .collect();
    let mut replies = HashSet::new();
    for sender in senders {
        for reply in sender.await.unwrap() {
            assert!(
                replies.insert(reply),
                "reply {reply} seen twice: each reply must show the state after its own event"
            );
        }
    }
    let commands = SENDERS * PER_SENDER;
    assert_eq!(
        replies,
        (1..=commands).collect::<HashSet<_>>(),
        "replies must be exactly 1..={commands}"
    );
    assert_eq!(counter.handle_command(Get).await.unwrap(), Ok(commands));
    assert_eq!(
        log.last_seq_no("counter", "hot").await.unwrap(),
        SeqNo::new(commands)
    );
    let appends = log.appends() as u64;
    assert!(
        appends * 4 < commands,
        "{commands} commands took {appends} appends: batching must merge concurrent commands"
    );
}

#[tokio::test]
async fn several_events_of_one_command_are_appended_together() {
    let log = InstrumentedLog::default();
    let counter = Counter::default()
        .entity()
        .spawn(
            "multi".to_owned(),
            log.clone(),
            NoopSnapshotStore,
            SerdeJson,
        )
        .await
        .unwrap();
    assert_eq!(
        counter
            .handle_command(support::IncreaseAll(vec![1, 2, 3]))
            .await
            .unwrap(),
        Ok(6)
    );
    assert_eq!(
        log.appends(),
        1,
        "three events of one command must take one append"
    );
    assert_eq!(
        log.last_seq_no("counter", "multi").await.unwrap(),
        SeqNo::new(3)
    );
}

#[tokio::test]
async fn a_batch_without_events_does_not_append() {
    let log = InstrumentedLog::default();
    let counter = Counter::default()
        .entity()
        .spawn(
            "quiet".to_owned(),
            log.clone(),
            NoopSnapshotStore,
            SerdeJson,
        )
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(counter.handle_command(Get).await.unwrap(), Ok(0));
    }
    assert_eq!(log.appends(), 0);
}

/// A command may emit an empty list of events: it is answered like any other
/// command, alone or inside a batch, and the entity keeps running.
#[tokio::test]
async fn a_command_emitting_no_events_gets_its_reply() {
    let log = InstrumentedLog::default();
    let counter = Counter::default()
        .entity()
        .spawn(
            "empty".to_owned(),
            log.clone(),
            NoopSnapshotStore,
            SerdeJson,
        )
        .await
        .unwrap();
    assert_eq!(counter.handle_command(Increase(3)).await.unwrap(), Ok(3));
    assert_eq!(
        counter.handle_command(IncreaseAll(vec![])).await.unwrap(),
        Ok(3)
    );
    assert_eq!(log.appends(), 1);

    let (a, b, c) = tokio::join!(
        counter.handle_command(Increase(1)),
        counter.handle_command(IncreaseAll(vec![])),
        counter.handle_command(Increase(1)),
    );
    assert_eq!(a.unwrap(), Ok(4));
    assert_eq!(b.unwrap(), Ok(4));
    assert_eq!(c.unwrap(), Ok(5));
    assert!(counter.stopped().is_none());
    assert_eq!(counter.handle_command(Get).await.unwrap(), Ok(5));
}
