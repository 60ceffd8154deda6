//! The shared conformance suites and NATS-specific behaviour, against a real
//! server (`NATS_URL`, or one the test support starts).

mod support;

use async_nats::jetstream;
use bytes::Bytes;
use eventsourced::{
    Command, CommandEffect, EntityRef, EventLog, EventLogError, EventSourced, EventSourcedExt,
    Position, SeqNo, SerdeJson, SnapshotStore,
    testkit::{self, unique_type_name},
};
use eventsourced_nats::{NatsConfig, NatsEventLog, NatsSnapshotStore};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(60);

fn config() -> NatsConfig {
    NatsConfig::from_url(&support::nats_url())
}

async fn log() -> NatsEventLog {
    let log = NatsEventLog::new(config())
        .await
        .expect("connect to the test NATS server");
    log.setup().await.expect("setup creates the stream");
    log
}

async fn store() -> NatsSnapshotStore {
    let store = NatsSnapshotStore::new(config())
        .await
        .expect("connect to the test NATS server");
    store.setup().await.expect("setup creates the bucket");
    store
}

async fn by_id(log: &NatsEventLog, type_name: &str, id: &str, from: u64) -> Vec<(SeqNo, Bytes)> {
    timeout(
        LIMIT,
        log.events_by_id(type_name, id, SeqNo::new(from))
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("events_by_id must end")
    .expect("events_by_id must succeed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_log_passes_the_conformance_suite() {
    let log = log().await;
    timeout(Duration::from_secs(180), testkit::check_event_log(log))
        .await
        .expect("the suite must finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_store_passes_the_conformance_suite() {
    let store = store().await;
    timeout(LIMIT, testkit::check_snapshot_store(store))
        .await
        .expect("the suite must finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn setup_is_idempotent_and_shares_the_connection() {
    let log = log().await;
    log.setup().await.expect("a second setup succeeds");
    let store = NatsSnapshotStore::with_client(log.client().clone(), config())
        .await
        .expect("a store on the log's connection");
    store.setup().await.expect("bucket setup");
    store.setup().await.expect("a second bucket setup succeeds");
    let type_name = unique_type_name("shared");
    store
        .save(&type_name, "a", SeqNo::new(1), Bytes::from("s"))
        .await
        .expect("save");
    assert_eq!(
        store.load(&type_name, "a").await.expect("load"),
        Some((SeqNo::new(1), Bytes::from("s")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_is_one_message_on_a_reversible_subject() {
    let log = log().await;
    let type_name = unique_type_name("one-message");
    let id = "a.b *>";
    let events: Vec<Bytes> = (1..=3).map(|n| Bytes::from(format!("e{n}"))).collect();
    assert_eq!(
        log.append(&type_name, id, SeqNo::ZERO, &events)
            .await
            .expect("append"),
        SeqNo::new(3)
    );
    let jetstream = jetstream::new(log.client().clone());
    let stream = jetstream
        .get_stream("eventsourced")
        .await
        .expect("the stream exists");
    use base64_token::encode;
    let subject = format!("eventsourced.{}.{}", encode(&type_name), encode(id));
    let message = stream
        .get_last_raw_message_by_subject(&subject)
        .await
        .expect("the entity's subject holds its message");
    assert_eq!(
        message
            .headers
            .get("Eventsourced-Count")
            .map(|v| v.as_str()),
        Some("3"),
        "one message carries the whole batch"
    );
    assert_eq!(
        message
            .headers
            .get("Eventsourced-Seq-No")
            .map(|v| v.as_str()),
        Some("1")
    );
    let first = stream
        .direct_get_first_for_subject(&subject)
        .await
        .expect("first message");
    assert_eq!(
        first.sequence, message.sequence,
        "the batch must be a single message"
    );
}

/// The documented token encoding, re-implemented here to pin it down.
mod base64_token {
    pub(super) fn encode(name: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = name.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            let chars = chunk.len() + 1;
            for i in 0..chars {
                let index = (n >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[usize::try_from(index).unwrap_or(0)]));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_first_event_is_a_conflict() {
    let log = log().await;
    let type_name = unique_type_name("second-first");
    log.append(&type_name, "a", SeqNo::ZERO, &[Bytes::from("one")])
        .await
        .expect("first append");
    // A fresh handle has no memory of the entity: the server must refuse.
    let other = NatsEventLog::new(config()).await.expect("connect");
    let second = other
        .append(&type_name, "a", SeqNo::ZERO, &[Bytes::from("again")])
        .await;
    assert!(
        matches!(
            second,
            Err(EventLogError::Conflict { expected, actual, .. })
                if expected == SeqNo::ZERO && actual == SeqNo::new(1)
        ),
        "got {second:?}"
    );
    assert_eq!(by_id(&log, &type_name, "a", 1).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_memory_of_another_handle_is_a_conflict_not_a_duplicate() {
    let first = log().await;
    let second = NatsEventLog::new(config()).await.expect("connect");
    let type_name = unique_type_name("stale-memo");
    first
        .append(&type_name, "a", SeqNo::ZERO, &[Bytes::from("1")])
        .await
        .expect("append 1");
    // `second` learns seq_no 1, then `first` moves on.
    assert_eq!(
        second.last_seq_no(&type_name, "a").await.expect("read"),
        SeqNo::new(1)
    );
    first
        .append(&type_name, "a", SeqNo::new(1), &[Bytes::from("2")])
        .await
        .expect("append 2");
    let stale = second
        .append(&type_name, "a", SeqNo::new(1), &[Bytes::from("stale")])
        .await;
    assert!(
        matches!(stale, Err(EventLogError::Conflict { actual, .. }) if actual == SeqNo::new(2)),
        "got {stale:?}"
    );
    assert_eq!(
        by_id(&first, &type_name, "a", 1).await,
        vec![
            (SeqNo::new(1), Bytes::from("1")),
            (SeqNo::new(2), Bytes::from("2"))
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_resume_inside_a_batch() {
    let log = log().await;
    let type_name = unique_type_name("resume-batch");
    let events: Vec<Bytes> = (1..=5).map(|n| Bytes::from(format!("e{n}"))).collect();
    log.append(&type_name, "a", SeqNo::ZERO, &events)
        .await
        .expect("append");
    log.append(&type_name, "b", SeqNo::ZERO, &events[..2])
        .await
        .expect("append");
    let all: Vec<_> = timeout(
        LIMIT,
        log.events_by_type(&type_name, Position::START)
            .take(7)
            .try_collect::<Vec<_>>(),
    )
    .await
    .expect("in time")
    .expect("read");
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    for cut in 0..6 {
        let rest: Vec<_> = timeout(
            LIMIT,
            log.events_by_type(&type_name, all[cut].position.next())
                .take(6 - cut)
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("in time")
        .expect("read");
        assert_eq!(rest, all[cut + 1..], "resuming after event {cut}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_by_id_from_deep_inside_a_long_history() {
    let log = log().await;
    let type_name = unique_type_name("long");
    let mut expected = Vec::new();
    let (mut last, mut other_last) = (SeqNo::ZERO, SeqNo::ZERO);
    for round in 0..120u64 {
        // 1 to 3 events per append, interleaved with another entity.
        let events: Vec<Bytes> = (0..1 + round % 3)
            .map(|k| Bytes::from(format!("{round}/{k}")))
            .collect();
        for event in &events {
            expected.push((
                SeqNo::new(u64::try_from(expected.len()).expect("len") + 1),
                event.clone(),
            ));
        }
        last = log
            .append(&type_name, "long", last, &events)
            .await
            .expect("append");
        other_last = log
            .append(&type_name, "other", other_last, &[Bytes::from("x")])
            .await
            .expect("append");
    }
    let total = last.get();
    assert_eq!(total, u64::try_from(expected.len()).expect("len"));
    for from in [
        1,
        128,
        129,
        130,
        131,
        200,
        total - 3,
        total - 1,
        total,
        total + 1,
    ] {
        let read = by_id(&log, &type_name, "long", from).await;
        let skip = usize::try_from(from.saturating_sub(1)).expect("usize");
        assert_eq!(
            read,
            expected.get(skip..).unwrap_or_default(),
            "events_by_id from {from}"
        );
    }
    // Finished reads delete their consumers.
    let subject = format!(
        "eventsourced.{}.{}",
        base64_token::encode(&type_name),
        base64_token::encode("long")
    );
    let stream = jetstream::new(log.client().clone())
        .get_stream("eventsourced")
        .await
        .expect("stream");
    timeout(Duration::from_secs(10), async {
        loop {
            let left: Vec<_> = stream
                .consumers()
                .try_collect::<Vec<_>>()
                .await
                .expect("list consumers")
                .into_iter()
                .filter(|c| c.config.filter_subject == subject)
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the read consumers must be deleted after the reads");
}

/// Appends `messages` messages of 1 to 3 events to `id`, each followed by an
/// event of `other` (so the entity's messages are not contiguous in the
/// stream); returns every event of `id` with its seq_no.
async fn long_history(
    log: &NatsEventLog,
    type_name: &str,
    id: &str,
    other: &str,
    messages: u64,
) -> Vec<(SeqNo, Bytes)> {
    let mut expected = Vec::new();
    let (mut last, mut other_last) = (SeqNo::ZERO, SeqNo::ZERO);
    for round in 0..messages {
        let events: Vec<Bytes> = (0..1 + round % 3)
            .map(|k| Bytes::from(format!("{round}/{k}")))
            .collect();
        for event in &events {
            expected.push((
                SeqNo::new(u64::try_from(expected.len()).expect("len") + 1),
                event.clone(),
            ));
        }
        last = log
            .append(type_name, id, last, &events)
            .await
            .expect("append");
        other_last = log
            .append(type_name, other, other_last, &[Bytes::from("x")])
            .await
            .expect("append");
    }
    assert_eq!(last.get(), u64::try_from(expected.len()).expect("len"));
    expected
}

/// Reads `id` from each of `froms` and checks every seq_no and event.
async fn check_reads(
    log: &NatsEventLog,
    type_name: &str,
    id: &str,
    expected: &[(SeqNo, Bytes)],
    froms: &[u64],
) {
    for &from in froms {
        let read = by_id(log, type_name, id, from).await;
        let skip = usize::try_from(from.saturating_sub(1)).expect("usize");
        let want = expected.get(skip..).unwrap_or_default();
        assert_eq!(read.len(), want.len(), "events_by_id from {from}: count");
        for (i, ((seq_no, event), (want_seq_no, want_event))) in read.iter().zip(want).enumerate() {
            assert_eq!(
                (seq_no, event),
                (want_seq_no, want_event),
                "events_by_id from {from}: event {i}"
            );
            assert_eq!(
                seq_no.get(),
                from.max(1) + u64::try_from(i).expect("u64"),
                "events_by_id from {from}: gapless seq_nos"
            );
        }
    }
}

/// More than a thousand messages (more than one batch of any read, and far
/// more than the consumer's pull batch), read whole and from the middle.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_by_id_reads_a_long_entity_exactly() {
    let log = log().await;
    let type_name = unique_type_name("longer");
    let expected = long_history(&log, &type_name, "long", "other", 1500).await;
    let total = u64::try_from(expected.len()).expect("len");
    check_reads(
        &log,
        &type_name,
        "long",
        &expected,
        &[
            1,
            2,
            129,
            total / 2,
            total / 2 + 1,
            total - 40,
            total - 5,
            total,
        ],
    )
    .await;
}

/// A stream created elsewhere without `allow_direct` (direct gets have no
/// responder): every read falls back to a consumer and stays exact; `setup`
/// then turns direct gets on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_work_without_direct_gets_and_setup_enables_them() {
    let mut config = config();
    let unique = unique_type_name("nodirect").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    config.stream = unique.clone();
    config.subject_prefix = unique.clone();
    let jetstream = jetstream::new(
        async_nats::connect(support::nats_url())
            .await
            .expect("connect"),
    );
    jetstream
        .create_stream(jetstream::stream::Config {
            name: unique.clone(),
            subjects: vec![format!("{unique}.>")],
            discard: jetstream::stream::DiscardPolicy::New,
            allow_direct: false,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await
        .expect("create a stream without direct gets");
    let log = NatsEventLog::new(config).await.expect("connect");
    let expected = long_history(&log, "counter", "a", "b", 150).await;
    let total = u64::try_from(expected.len()).expect("len");
    // From the start (consumer), after a search (> 128 events before), and
    // near the end (walking back).
    let froms = [1, 200, total - 40, total - 3, total];
    // A direct get without responder fails at once: all the reads together
    // take less than one request timeout (5 s).
    timeout(
        log.config().request_timeout,
        check_reads(&log, "counter", "a", &expected, &froms),
    )
    .await
    .expect("reads without direct gets must not wait for a timeout");
    log.setup().await.expect("setup updates the stream");
    let mut stream = jetstream.get_stream(&unique).await.expect("stream");
    let info = stream.info().await.expect("info");
    assert!(info.config.allow_direct, "setup must enable direct gets");
    check_reads(&log, "counter", "a", &expected, &froms).await;
    jetstream.delete_stream(&unique).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_entities_append_concurrently() {
    let log = log().await;
    let type_name = unique_type_name("many");
    let tasks: Vec<_> = (0..100)
        .map(|entity| {
            let (log, type_name) = (log.clone(), type_name.clone());
            tokio::spawn(async move {
                let id = format!("entity-{entity}");
                let mut last = SeqNo::ZERO;
                for n in 0..20 {
                    last = log
                        .append(&type_name, &id, last, &[Bytes::from(format!("{n}"))])
                        .await
                        .expect("append");
                }
                last
            })
        })
        .collect();
    for task in tasks {
        let last = timeout(LIMIT, task)
            .await
            .expect("in time")
            .expect("no panic");
        assert_eq!(last, SeqNo::new(20));
    }
    for entity in [0, 42, 99] {
        let events = by_id(&log, &type_name, &format!("entity-{entity}"), 1).await;
        let expected: Vec<_> = (0..20)
            .map(|n| (SeqNo::new(n + 1), Bytes::from(format!("{n}"))))
            .collect();
        assert_eq!(events, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_foreign_message_on_an_entity_subject_is_corrupt() {
    let log = log().await;
    let jetstream = jetstream::new(log.client().clone());
    // Headers whose seq_nos would run past u64::MAX, and no headers at all.
    let mut overflowing = async_nats::HeaderMap::new();
    overflowing.insert("Eventsourced-Seq-No", u64::MAX.to_string().as_str());
    overflowing.insert("Eventsourced-Count", "2");
    let cases = [
        (async_nats::HeaderMap::new(), "not written by eventsourced"),
        (overflowing, "\0\0\0\x01a\0\0\0\x01b"),
    ];
    for (headers, payload) in cases {
        let type_name = unique_type_name("corrupt");
        let subject = format!(
            "eventsourced.{}.{}",
            base64_token::encode(&type_name),
            base64_token::encode("a")
        );
        jetstream
            .publish_with_headers(subject, headers, Bytes::from(payload))
            .await
            .expect("publish")
            .await
            .expect("ack");
        let last = log.last_seq_no(&type_name, "a").await;
        assert!(
            matches!(last, Err(EventLogError::Corrupt { .. })),
            "got {last:?}"
        );
        let append = log
            .append(&type_name, "a", SeqNo::new(2), &[Bytes::from("x")])
            .await;
        assert!(
            matches!(append, Err(EventLogError::Corrupt { .. })),
            "got {append:?}"
        );
        let read: Result<Vec<_>, _> = timeout(
            LIMIT,
            log.events_by_id(&type_name, "a", SeqNo::new(1))
                .try_collect::<Vec<_>>(),
        )
        .await
        .expect("in time");
        assert!(
            matches!(read, Err(EventLogError::Corrupt { .. })),
            "got {read:?}"
        );
        let mut stream = Box::pin(log.events_by_type(&type_name, Position::START));
        let live = timeout(LIMIT, stream.next()).await.expect("in time");
        assert!(
            matches!(live, Some(Err(EventLogError::Corrupt { .. }))),
            "got {live:?}"
        );
    }
}

/// An expected seq_no so large that the new one would not be a u64 is a
/// conflict with what is stored, or an error when it is stored: never a
/// panic, never an append that writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expected_seq_no_near_the_largest_is_refused() {
    let log = log().await;
    let type_name = unique_type_name("huge");
    let append = log
        .append(&type_name, "a", SeqNo::new(u64::MAX), &[Bytes::from("x")])
        .await;
    assert!(
        matches!(append, Err(EventLogError::Conflict { actual, .. }) if actual == SeqNo::ZERO),
        "got {append:?}"
    );
    assert_eq!(log.last_seq_no(&type_name, "a").await.unwrap(), SeqNo::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_stream_is_an_error_that_says_to_run_setup() {
    let mut config = config();
    let unique = unique_type_name("missing").replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    config.stream = unique.clone();
    config.subject_prefix = unique;
    let log = NatsEventLog::new(config).await.expect("connect");
    let result = timeout(
        LIMIT,
        log.append("counter", "a", SeqNo::ZERO, &[Bytes::from("x")]),
    )
    .await
    .expect("in time");
    let error = result.expect_err("no stream, no append");
    assert!(
        matches!(error, EventLogError::Backend { .. }) && error.to_string().contains("setup"),
        "got {error}"
    );
    let last = timeout(LIMIT, log.last_seq_no("counter", "a"))
        .await
        .expect("in time")
        .expect_err("no stream");
    assert!(last.to_string().contains("setup"), "got {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_entity_runs_and_recovers_on_nats() {
    let log = log().await;
    let store = NatsSnapshotStore::with_client(log.client().clone(), config())
        .await
        .expect("store");
    store.setup().await.expect("bucket");
    let id = format!("counter {}", unique_type_name("e2e"));
    let spawn = || {
        Counter::default().entity().snapshot_every(5).spawn(
            id.clone(),
            log.clone(),
            store.clone(),
            SerdeJson,
        )
    };
    let counter: EntityRef<Counter> = timeout(LIMIT, spawn())
        .await
        .expect("in time")
        .expect("spawn");
    for n in 1..=12 {
        assert_eq!(
            counter.handle_command(Add(1)).await.expect("command"),
            Ok(n)
        );
    }
    drop(counter);
    let counter: EntityRef<Counter> = timeout(LIMIT, spawn())
        .await
        .expect("in time")
        .expect("respawn");
    assert_eq!(
        counter.handle_command(Add(3)).await.expect("command"),
        Ok(15)
    );
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Debug, Serialize, Deserialize)]
struct Added(u64);

impl EventSourced for Counter {
    type Id = String;
    type Event = Added;
    const TYPE_NAME: &'static str = "nats-test-counter";

    fn handle_event(self, Added(n): Added) -> Self {
        Counter(self.0 + n)
    }
}

struct Add(u64);

impl Command<Counter> for Add {
    type Reply = u64;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        _state: &Counter,
    ) -> CommandEffect<Counter, u64, std::convert::Infallible> {
        CommandEffect::emit_and_reply(Added(self.0), |state: &Counter| state.0)
    }
}

#[test]
fn public_types_are_send_sync_clone_debug() {
    fn check<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    check::<NatsEventLog>();
    check::<NatsSnapshotStore>();
    check::<NatsConfig>();
    fn error<T: Send + Sync + std::error::Error + 'static>() {}
    error::<eventsourced_nats::NatsError>();
}
