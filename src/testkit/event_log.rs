use super::{ODD_IDS, unique_type_name};
use crate::{EventEnvelope, EventLog, EventLogError, Position, SeqNo};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::{collections::HashMap, time::Duration};
use tokio::time::timeout;

/// How long a check waits for a live event before it fails.
const LIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every event log check against `log`; panics on the first failure.
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 4)]
/// # async fn main() {
/// use eventsourced::{MemoryEventLog, testkit::check_event_log};
///
/// // In a backend's tests, e.g. a `#[tokio::test(flavor = "multi_thread")]`:
/// // returns if the log keeps the contract, panics with the broken rule if not.
/// check_event_log(MemoryEventLog::new()).await;
/// # }
/// ```
pub async fn check_event_log<L: EventLog>(log: L) {
    round_trip(&log).await;
    numbering_starts_at_one_without_gaps(&log).await;
    stale_expectation_conflicts_and_writes_nothing(&log).await;
    first_event_race_has_one_winner(&log).await;
    several_events_are_atomic(&log).await;
    events_by_id_from_the_middle(&log).await;
    events_by_type_catches_up_then_follows(&log).await;
    resuming_yields_each_later_event_once_in_order(&log).await;
    concurrent_appends_lose_and_duplicate_nothing(&log).await;
    live_stream_follows_concurrent_appends(&log).await;
    long_catch_up_crosses_every_page(&log).await;
    odd_ids_round_trip_or_are_refused(&log).await;
    types_never_share_a_sequence(&log).await;
    empty_append_is_an_optimistic_check(&log).await;
}

fn event(label: impl std::fmt::Display) -> Bytes {
    Bytes::from(label.to_string())
}

async fn by_id<L: EventLog>(log: &L, type_name: &str, id: &str, from: u64) -> Vec<(SeqNo, Bytes)> {
    log.events_by_id(type_name, id, SeqNo::new(from))
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("events_by_id({type_name}, {id:?}) must succeed: {e}"))
}

/// Takes `n` envelopes from a live by-type stream, failing after a timeout.
async fn take_live<L: EventLog>(
    log: &L,
    type_name: &str,
    from: Position,
    n: usize,
) -> Vec<EventEnvelope> {
    let stream = log.events_by_type(type_name, from).take(n);
    let taken: Vec<_> = timeout(LIVE_TIMEOUT, stream.try_collect())
        .await
        .unwrap_or_else(|_| {
            panic!("events_by_type({type_name}) must deliver {n} events within {LIVE_TIMEOUT:?}")
        })
        .unwrap_or_else(|e| panic!("events_by_type({type_name}) must not fail: {e}"));
    taken
}

async fn append<L: EventLog>(
    log: &L,
    type_name: &str,
    id: &str,
    expected: u64,
    events: &[Bytes],
) -> SeqNo {
    log.append(type_name, id, SeqNo::new(expected), events)
        .await
        .unwrap_or_else(|e| {
            panic!("append to {type_name}/{id:?} after {expected} must succeed: {e}")
        })
}

fn assert_conflict(result: Result<SeqNo, EventLogError>, expected: u64, actual: u64, what: &str) {
    match result {
        Err(EventLogError::Conflict {
            expected: e,
            actual: a,
            ..
        }) => {
            assert_eq!(
                (e.get(), a.get()),
                (expected, actual),
                "{what}: the conflict must report expected {expected} and actual {actual}"
            );
        }
        other => panic!(
            "{what}: expected a Conflict (expected {expected}, actual {actual}), got {other:?}"
        ),
    }
}

async fn round_trip<L: EventLog>(log: &L) {
    let type_name = unique_type_name("round-trip");
    let all_bytes: Bytes = (0..=255u8).collect::<Vec<_>>().into();
    let last = append(log, &type_name, "a", 0, std::slice::from_ref(&all_bytes)).await;
    assert_eq!(last, SeqNo::new(1), "the first event's seq_no must be 1");
    assert_eq!(
        log.last_seq_no(&type_name, "a")
            .await
            .expect("last_seq_no must succeed"),
        SeqNo::new(1)
    );
    assert_eq!(
        by_id(log, &type_name, "a", 1).await,
        vec![(SeqNo::new(1), all_bytes.clone())],
        "an event (all 256 byte values) must read back unchanged"
    );
    // Empty events are events (prost encodes a default message to 0 bytes).
    let with_empty = [Bytes::new(), event("between"), Bytes::new()];
    assert_eq!(
        append(log, &type_name, "a", 1, &with_empty).await,
        SeqNo::new(4)
    );
    let expected: Vec<(SeqNo, Bytes)> = (1..)
        .map(SeqNo::new)
        .zip([all_bytes].into_iter().chain(with_empty))
        .collect();
    assert_eq!(
        by_id(log, &type_name, "a", 1).await,
        expected,
        "empty events must be stored and read back by id like any other"
    );
    let by_type: Vec<(SeqNo, Bytes)> = take_live(log, &type_name, Position::START, 4)
        .await
        .into_iter()
        .map(|e| (e.seq_no, e.event))
        .collect();
    assert_eq!(
        by_type, expected,
        "empty events must be read back by type like any other"
    );
    assert_eq!(
        log.last_seq_no(&type_name, "never-written")
            .await
            .expect("last_seq_no must succeed"),
        SeqNo::ZERO,
        "an entity without events has last seq_no 0"
    );
    assert!(by_id(log, &type_name, "never-written", 1).await.is_empty());
}

async fn numbering_starts_at_one_without_gaps<L: EventLog>(log: &L) {
    let type_name = unique_type_name("numbering");
    assert_eq!(
        append(log, &type_name, "a", 0, &[event(1), event(2), event(3)]).await,
        SeqNo::new(3)
    );
    assert_eq!(
        append(log, &type_name, "a", 3, &[event(4), event(5)]).await,
        SeqNo::new(5)
    );
    let seq_nos: Vec<u64> = by_id(log, &type_name, "a", 1)
        .await
        .iter()
        .map(|(s, _)| s.get())
        .collect();
    assert_eq!(
        seq_nos,
        vec![1, 2, 3, 4, 5],
        "seq_nos must start at 1 and have no gaps"
    );
}

async fn stale_expectation_conflicts_and_writes_nothing<L: EventLog>(log: &L) {
    let type_name = unique_type_name("conflict");
    append(log, &type_name, "a", 0, &[event(1), event(2)]).await;
    let stale = log
        .append(&type_name, "a", SeqNo::new(1), &[event("stale")])
        .await;
    assert_conflict(stale, 1, 2, "append expecting 1 when the log holds 2");
    let ahead = log
        .append(&type_name, "a", SeqNo::new(5), &[event("ahead")])
        .await;
    assert_conflict(ahead, 5, 2, "append expecting 5 when the log holds 2");
    let fresh = log
        .append(&type_name, "a", SeqNo::ZERO, &[event("again first")])
        .await;
    assert_conflict(fresh, 0, 2, "append expecting 0 when the log holds 2");
    assert_eq!(
        by_id(log, &type_name, "a", 1).await,
        vec![(SeqNo::new(1), event(1)), (SeqNo::new(2), event(2))],
        "a conflicting append must write nothing"
    );
    assert_eq!(
        log.last_seq_no(&type_name, "a").await.expect("last_seq_no"),
        SeqNo::new(2)
    );
}

async fn first_event_race_has_one_winner<L: EventLog>(log: &L) {
    let type_name = unique_type_name("first-race");
    for entity in 0..5 {
        let id = format!("racer-{entity}");
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let (log, type_name, id) = (log.clone(), type_name.clone(), id.clone());
                tokio::spawn(async move {
                    log.append(
                        &type_name,
                        &id,
                        SeqNo::ZERO,
                        &[event(format!("writer {writer}"))],
                    )
                    .await
                })
            })
            .collect();
        let mut winners = 0;
        for writer in writers {
            match writer.await.expect("writer task must not panic") {
                Ok(seq_no) => {
                    assert_eq!(seq_no, SeqNo::new(1));
                    winners += 1;
                }
                Err(EventLogError::Conflict { .. }) => {}
                Err(other) => {
                    panic!("a losing first-event writer must get a Conflict, got {other}")
                }
            }
        }
        assert_eq!(
            winners, 1,
            "exactly one of 8 writers racing for the first event of {id} must win"
        );
        assert_eq!(
            by_id(log, &type_name, &id, 1).await.len(),
            1,
            "the log must hold one first event for {id}"
        );
    }
}

async fn several_events_are_atomic<L: EventLog>(log: &L) {
    let type_name = unique_type_name("atomic");
    let batch: Vec<Bytes> = (1..=100).map(event).collect();
    assert_eq!(
        append(log, &type_name, "a", 0, &batch).await,
        SeqNo::new(100)
    );
    let read = by_id(log, &type_name, "a", 1).await;
    assert_eq!(
        read.len(),
        100,
        "all 100 events of one append must be stored"
    );
    assert!(
        read.iter()
            .zip(1..)
            .all(|((s, e), n)| s.get() == n && *e == event(n))
    );
    let conflicting = log
        .append(
            &type_name,
            "a",
            SeqNo::new(50),
            &[event("x"), event("y"), event("z")],
        )
        .await;
    assert_conflict(conflicting, 50, 100, "a conflicting multi-event append");
    assert_eq!(
        by_id(log, &type_name, "a", 1).await.len(),
        100,
        "a conflicting multi-event append must write none of its events"
    );
}

async fn events_by_id_from_the_middle<L: EventLog>(log: &L) {
    let type_name = unique_type_name("by-id-middle");
    let events: Vec<Bytes> = (1..=10).map(event).collect();
    append(log, &type_name, "a", 0, &events[..4]).await;
    append(log, &type_name, "a", 4, &events[4..]).await;
    let from_four: Vec<u64> = by_id(log, &type_name, "a", 4)
        .await
        .iter()
        .map(|(s, _)| s.get())
        .collect();
    assert_eq!(
        from_four,
        (4..=10).collect::<Vec<_>>(),
        "events_by_id from 4 must yield 4..=10 in order"
    );
    assert!(
        by_id(log, &type_name, "a", 11).await.is_empty(),
        "events_by_id after the last event must be empty"
    );
    assert_eq!(
        by_id(log, &type_name, "a", 0).await.len(),
        10,
        "events_by_id from 0 must yield every event"
    );
}

async fn events_by_type_catches_up_then_follows<L: EventLog>(log: &L) {
    let type_name = unique_type_name("by-type-live");
    let other_type = unique_type_name("by-type-other");
    append(log, &type_name, "a", 0, &[event("a1"), event("a2")]).await;
    append(log, &other_type, "a", 0, &[event("other")]).await;
    append(log, &type_name, "b", 0, &[event("b1")]).await;

    let mut live = Box::pin(log.events_by_type(&type_name, Position::START));
    let mut next = async || {
        timeout(LIVE_TIMEOUT, live.next())
            .await
            .expect("events_by_type must deliver within the timeout")
            .expect("a live stream must not end")
            .expect("events_by_type must not fail")
    };
    let caught_up = [next().await, next().await, next().await];
    let seen: Vec<(&str, u64, Bytes)> = caught_up
        .iter()
        .map(|e| (e.id.as_str(), e.seq_no.get(), e.event.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", 1, event("a1")),
            ("a", 2, event("a2")),
            ("b", 1, event("b1"))
        ],
        "events_by_type must catch up on this type's events only, in append order"
    );
    // Appended after the stream caught up: must be delivered live.
    let (log2, type2) = (log.clone(), type_name.clone());
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log2.append(&type2, "a", SeqNo::new(2), &[event("a3")])
            .await
    });
    let live_event = next().await;
    writer
        .await
        .expect("writer must not panic")
        .expect("live append must succeed");
    assert_eq!(
        (
            live_event.id.as_str(),
            live_event.seq_no.get(),
            live_event.event
        ),
        ("a", 3, event("a3"))
    );
    assert!(
        caught_up.windows(2).all(|w| w[0].position < w[1].position)
            && caught_up[2].position < live_event.position,
        "positions must increase"
    );
}

async fn resuming_yields_each_later_event_once_in_order<L: EventLog>(log: &L) {
    let type_name = unique_type_name("resume");
    for round in 0..5 {
        for id in ["w", "x", "y", "z"] {
            append(log, &type_name, id, round, &[event(format!("{id}{round}"))]).await;
        }
    }
    let all = take_live(log, &type_name, Position::START, 20).await;
    for cut in [0, 6, 13, 19] {
        let resume_from = all[cut].position.next();
        let rest = take_live(log, &type_name, resume_from, 19 - cut).await;
        assert_eq!(
            rest,
            all[cut + 1..],
            "resuming after position {} must yield exactly the later events, in order",
            all[cut].position
        );
    }
    // Nothing beyond the end: a resumed stream waits for the next append.
    let after_last = all[19].position.next();
    let mut tail = Box::pin(log.events_by_type(&type_name, after_last));
    let nothing = timeout(Duration::from_millis(200), tail.next()).await;
    assert!(
        nothing.is_err(),
        "resuming after the last event must yield nothing until a new append, got {nothing:?}"
    );
    append(log, &type_name, "w", 5, &[event("w5")]).await;
    let new = timeout(LIVE_TIMEOUT, tail.next())
        .await
        .expect("the new event must arrive")
        .expect("stream must not end")
        .expect("must not fail");
    assert_eq!((new.id.as_str(), new.seq_no.get()), ("w", 6));
}

async fn concurrent_appends_lose_and_duplicate_nothing<L: EventLog>(log: &L) {
    const TASKS: usize = 50;
    const ENTITIES: usize = 20;
    const APPENDS_PER_TASK: usize = 10;
    let type_name = unique_type_name("concurrent");
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (log, type_name) = (log.clone(), type_name.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                for n in 0..APPENDS_PER_TASK {
                    let id = format!("e{}", (task + n) % ENTITIES);
                    let events: Vec<Bytes> = (0..1 + n % 3)
                        .map(|k| event(format!("{task}/{n}/{k}")))
                        .collect();
                    loop {
                        let last = log
                            .last_seq_no(&type_name, &id)
                            .await
                            .expect("last_seq_no must succeed");
                        match log.append(&type_name, &id, last, &events).await {
                            Ok(new_last) => {
                                assert_eq!(
                                    new_last,
                                    last.add(events.len() as u64),
                                    "append must return the new last seq_no"
                                );
                                for (seq_no, e) in (last.get() + 1..).zip(&events) {
                                    acknowledged.push((id.clone(), seq_no, e.clone()));
                                }
                                break;
                            }
                            Err(EventLogError::Conflict { .. }) => tokio::task::yield_now().await,
                            Err(other) => {
                                panic!("concurrent append must succeed or conflict, got {other}")
                            }
                        }
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged: HashMap<String, HashMap<u64, Bytes>> = HashMap::new();
    let mut total = 0;
    for task in tasks {
        for (id, seq_no, e) in task.await.expect("append task must not panic") {
            total += 1;
            assert!(
                acknowledged
                    .entry(id.clone())
                    .or_default()
                    .insert(seq_no, e)
                    .is_none(),
                "seq_no {seq_no} of {id} acknowledged twice"
            );
        }
    }
    for entity in 0..ENTITIES {
        let id = format!("e{entity}");
        let stored = by_id(log, &type_name, &id, 1).await;
        let expected = acknowledged.remove(&id).unwrap_or_default();
        assert_eq!(
            stored.len(),
            expected.len(),
            "entity {id} must hold exactly its acknowledged events"
        );
        for ((seq_no, e), n) in stored.iter().zip(1..) {
            assert_eq!(seq_no.get(), n, "seq_nos of {id} must be gapless");
            assert_eq!(
                expected.get(&n),
                Some(e),
                "event {n} of {id} must be the acknowledged one"
            );
        }
    }
    let by_type = take_live(log, &type_name, Position::START, total).await;
    assert!(
        by_type.windows(2).all(|w| w[0].position < w[1].position),
        "by-type positions must increase"
    );
    let mut last_per_entity: HashMap<&str, u64> = HashMap::new();
    for envelope in &by_type {
        let last = last_per_entity.entry(&envelope.id).or_default();
        assert_eq!(
            envelope.seq_no.get(),
            *last + 1,
            "events_by_type must yield each entity's events once, in seq_no order"
        );
        *last += 1;
    }
}

/// A live stream, following from the start while several writers append to
/// entities of their own at once (one to three events per append), yields
/// every acknowledged event exactly once, in increasing positions, each
/// entity's in seq_no order, however the writers' commits interleave (an
/// event that commits after a higher-positioned one must not be skipped);
/// resuming from any of them yields exactly the later ones.
async fn live_stream_follows_concurrent_appends<L: EventLog>(log: &L) {
    const WRITERS: usize = 6;
    const APPENDS: u64 = 20;
    let type_name = unique_type_name("live-concurrent");
    let per_writer: u64 = (0..APPENDS).map(|n| 1 + n % 3).sum();
    let total = 1 + usize::try_from(per_writer).expect("small") * WRITERS;
    append(log, &type_name, "marker", 0, &[event("marker")]).await;

    // The follower reads the marker, says so, and then follows the writers.
    let (following_tx, following) = tokio::sync::oneshot::channel::<()>();
    let follower = {
        let (log, type_name) = (log.clone(), type_name.clone());
        tokio::spawn(async move {
            let mut following_tx = Some(following_tx);
            let mut live = Box::pin(log.events_by_type(&type_name, Position::START));
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total {
                let next = timeout(LIVE_TIMEOUT, live.next()).await;
                match next {
                    Ok(Some(Ok(envelope))) => seen.push(envelope),
                    Ok(Some(Err(e))) => panic!("a live events_by_type must not fail: {e}"),
                    Ok(None) => panic!("a live events_by_type must not end"),
                    Err(_) => panic!(
                        "a live events_by_type stopped after {} of {total} events: no event \
                         for {LIVE_TIMEOUT:?} while appends went on or had been acknowledged",
                        seen.len()
                    ),
                }
                if seen.len() == 1
                    && let Some(tx) = following_tx.take()
                {
                    let _ = tx.send(());
                }
            }
            seen
        })
    };
    following
        .await
        .expect("the follower must read the first event");

    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (log, type_name) = (log.clone(), type_name.clone());
            tokio::spawn(async move {
                let id = format!("writer-{writer}");
                let mut last = 0;
                let mut acknowledged = Vec::new();
                for n in 0..APPENDS {
                    let events: Vec<Bytes> = (0..1 + n % 3)
                        .map(|k| event(format!("{id}/{n}/{k}")))
                        .collect();
                    let new_last = append(&log, &type_name, &id, last, &events).await;
                    for (seq_no, e) in (last + 1..).zip(events) {
                        acknowledged.push((id.clone(), seq_no, e));
                    }
                    last = new_last.get();
                    // Now and then a pause, so the follower catches up and
                    // goes live again, many times over.
                    if n % 4 == writer as u64 % 4 {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                }
                acknowledged
            })
        })
        .collect();
    let mut acknowledged = vec![("marker".to_owned(), 1, event("marker"))];
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer must not panic"));
    }
    let seen = follower.await.expect("the follower must not panic");

    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "a live stream's positions must increase"
    );
    let mut delivered: Vec<(String, u64, Bytes)> = seen
        .iter()
        .map(|e| (e.id.clone(), e.seq_no.get(), e.event.clone()))
        .collect();
    let mut last_per_entity: HashMap<&str, u64> = HashMap::new();
    for (id, seq_no, _) in &delivered {
        let last = last_per_entity.entry(id).or_default();
        assert_eq!(
            *seq_no,
            *last + 1,
            "a live stream must yield each entity's events once, in seq_no order ({id})"
        );
        *last = *seq_no;
    }
    delivered.sort();
    acknowledged.sort();
    assert_eq!(
        delivered, acknowledged,
        "a live stream must yield exactly the acknowledged events"
    );
    for cut in [total / 3, total * 2 / 3, total - 2] {
        let rest = take_live(log, &type_name, seen[cut].position.next(), total - cut - 1).await;
        assert_eq!(
            rest,
            seen[cut + 1..],
            "resuming after position {} must yield exactly the later events",
            seen[cut].position
        );
    }
}

/// A catch-up of 10,000 events, written 1,000 per append between appends of
/// another type, yields every one in order: no event is lost or repeated at
/// the boundary of whatever pages or chunks the backend reads in.
async fn long_catch_up_crosses_every_page<L: EventLog>(log: &L) {
    const APPENDS: u64 = 10;
    const PER_APPEND: u64 = 1000;
    let type_name = unique_type_name("long-catch-up");
    let other_type = unique_type_name("long-catch-up-other");
    for n in 0..APPENDS {
        let id = format!("p{n}");
        let events: Vec<Bytes> = (1..=PER_APPEND)
            .map(|k| event(format!("{id}/{k}")))
            .collect();
        append(log, &type_name, &id, 0, &events).await;
        append(log, &other_type, &id, 0, &[event("other")]).await;
    }
    let total = usize::try_from(APPENDS * PER_APPEND).expect("small");
    let all = take_live(log, &type_name, Position::START, total).await;
    let expected = (0..APPENDS).flat_map(|n| (1..=PER_APPEND).map(move |k| (n, k)));
    for (envelope, (n, k)) in all.iter().zip(expected) {
        assert_eq!(
            (envelope.id.as_str(), envelope.seq_no.get(), &envelope.event),
            (format!("p{n}").as_str(), k, &event(format!("p{n}/{k}"))),
            "a long catch-up must yield every event once, in append order"
        );
    }
    assert!(
        all.windows(2).all(|w| w[0].position < w[1].position),
        "positions must increase"
    );
    let middle = total / 2 - 1;
    let rest = take_live(
        log,
        &type_name,
        all[middle].position.next(),
        total - middle - 1,
    )
    .await;
    assert!(
        rest == all[middle + 1..],
        "resuming in the middle of a long catch-up must yield exactly the later events"
    );
}

async fn odd_ids_round_trip_or_are_refused<L: EventLog>(log: &L) {
    let type_name = unique_type_name("odd-ids");
    let mut stored = Vec::new();
    for id in ODD_IDS {
        let payload = event(format!("event of {id}"));
        match log
            .append(&type_name, id, SeqNo::ZERO, std::slice::from_ref(&payload))
            .await
        {
            Ok(seq_no) => {
                assert_eq!(
                    seq_no,
                    SeqNo::new(1),
                    "id {id:?} must get its own sequence (no collision with another id)"
                );
                assert_eq!(
                    by_id(log, &type_name, id, 1).await,
                    vec![(SeqNo::new(1), payload)],
                    "id {id:?} must round-trip"
                );
                stored.push(*id);
            }
            Err(EventLogError::InvalidId { .. }) => {
                assert_eq!(
                    log.last_seq_no(&type_name, id).await.unwrap_or(SeqNo::ZERO),
                    SeqNo::ZERO,
                    "a refused id {id:?} must have nothing written"
                );
            }
            Err(other) => {
                panic!("append for id {id:?} must succeed or be refused as InvalidId, got {other}")
            }
        }
    }
    let envelopes = take_live(log, &type_name, Position::START, stored.len()).await;
    let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids, stored,
        "events_by_type must return every odd id unchanged"
    );
    // And live: a stream that has caught up gets each id's second event.
    let after = envelopes
        .last()
        .map_or(Position::START, |e| e.position.next());
    let live = {
        let (log, type_name, n) = (log.clone(), type_name.clone(), stored.len());
        tokio::spawn(async move { take_live(&log, &type_name, after, n).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in &stored {
        append(log, &type_name, id, 1, &[event(format!("second of {id}"))]).await;
    }
    let live = live.await.expect("the live reader must not panic");
    let live_ids: Vec<&str> = live.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        live_ids, stored,
        "events_by_type must deliver every odd id unchanged live too"
    );
    let empty = log.append(&type_name, "", SeqNo::ZERO, &[event("x")]).await;
    assert!(
        matches!(empty, Err(EventLogError::InvalidId { .. })),
        "an empty id must be refused with InvalidId, got {empty:?}"
    );
}

async fn types_never_share_a_sequence<L: EventLog>(log: &L) {
    let type_a = unique_type_name("type-a");
    let type_b = unique_type_name("type-b");
    assert_eq!(
        append(log, &type_a, "same", 0, &[event("a")]).await,
        SeqNo::new(1)
    );
    assert_eq!(
        append(log, &type_b, "same", 0, &[event("b")]).await,
        SeqNo::new(1),
        "another type with the same id must have its own sequence"
    );
    assert_eq!(
        by_id(log, &type_a, "same", 1).await,
        vec![(SeqNo::new(1), event("a"))]
    );
    let b_events = take_live(log, &type_b, Position::START, 1).await;
    assert_eq!(
        b_events[0].event,
        event("b"),
        "events_by_type must not mix types"
    );
}

async fn empty_append_is_an_optimistic_check<L: EventLog>(log: &L) {
    let type_name = unique_type_name("empty-append");
    let on_new = log.append(&type_name, "a", SeqNo::ZERO, &[]).await;
    assert_eq!(
        on_new.ok(),
        Some(SeqNo::ZERO),
        "an empty append expecting 0 on a new entity returns 0"
    );
    append(log, &type_name, "a", 0, &[event(1), event(2)]).await;
    let matching = log.append(&type_name, "a", SeqNo::new(2), &[]).await;
    assert_eq!(
        matching.ok(),
        Some(SeqNo::new(2)),
        "an empty append with the right expectation returns the last seq_no"
    );
    let stale = log.append(&type_name, "a", SeqNo::new(1), &[]).await;
    assert_conflict(stale, 1, 2, "an empty append with a stale expectation");
    assert_eq!(
        by_id(log, &type_name, "a", 1).await.len(),
        2,
        "empty appends must write nothing"
    );
}
