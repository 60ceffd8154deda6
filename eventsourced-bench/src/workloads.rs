//! The workloads that run through the entity runtime, generic over the
//! backend: `seq`, `hot`, `recovery` and `idle`. Each one checks its own
//! result and returns an error on any mismatch.

use crate::{
    BoxError,
    backends::Fresh,
    counter::{Counter, CounterError, Decrease, Get, Increase, event_for, value_after},
    report::{Record, micros, proc_status_kib},
};
use bytes::Bytes;
use eventsourced::{
    Binarize, EntityRef, EventLog, EventSourced, EventSourcedExt, SeqNo, SerdeJson, SnapshotStore,
};
use futures::{StreamExt, TryStreamExt, stream};
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

/// Set by the hidden `--sabotage-verification` flag: verification then
/// expects one event more than was acknowledged, so a test can check that a
/// mismatch makes the program fail.
pub(crate) static SABOTAGE_VERIFICATION: AtomicBool = AtomicBool::new(false);

/// How many verifications (or populating writes) run at once.
const CONCURRENCY: usize = 16;

/// Spawns the counter `id` on the run's log and snapshot store.
pub(crate) async fn spawn<L: EventLog, S: SnapshotStore>(
    fresh: &Fresh<L, S>,
    id: &str,
    snapshot_every: u64,
) -> Result<EntityRef<Counter>, BoxError> {
    Ok(Counter::default()
        .entity()
        .snapshot_every(snapshot_every)
        .spawn(
            id.to_owned(),
            fresh.log.clone(),
            fresh.snapshots.clone(),
            SerdeJson,
        )
        .await?)
}

/// Sends the `i`-th command of a sender (see [`event_for`]); returns the reply.
async fn send(counter: &EntityRef<Counter>, i: u64) -> Result<u64, BoxError> {
    let reply = if i.is_multiple_of(2) {
        counter.handle_command(Increase(2)).await?
    } else {
        counter.handle_command(Decrease(1)).await?
    };
    reply.map_err(|error: CounterError| {
        format!(
            "command {i} to {} was rejected with {error:?}",
            counter.id()
        )
        .into()
    })
}

/// `seq`: `entities` counters, each driven by one task that sends `commands`
/// alternating commands and awaits each reply.
pub(crate) async fn seq<L: EventLog, S: SnapshotStore>(
    backend: &'static str,
    fresh: &Fresh<L, S>,
    entities: usize,
    commands: u64,
) -> Result<Record, BoxError> {
    let ids: Vec<String> = (0..entities).map(|i| format!("seq-{i}")).collect();
    let mut counters = Vec::with_capacity(entities);
    for id in &ids {
        counters.push(spawn(fresh, id, 0).await?);
    }

    let start = Instant::now();
    let tasks: Vec<_> = counters
        .into_iter()
        .map(|counter| {
            tokio::spawn(async move {
                let capacity = usize::try_from(commands).unwrap_or(0);
                let mut latencies = Vec::with_capacity(capacity);
                for i in 0..commands {
                    let sent = Instant::now();
                    let value = send(&counter, i).await?;
                    latencies.push(micros(sent.elapsed()));
                    if value != value_after(i + 1) {
                        return Err(format!(
                            "{} replied {value} to command {i}, expected {}",
                            counter.id(),
                            value_after(i + 1)
                        )
                        .into());
                    }
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();

    let expected: Vec<(String, u64, u64)> = ids
        .into_iter()
        .map(|id| (id, commands, value_after(commands)))
        .collect();
    verify(fresh, &expected).await?;
    let total = u64::try_from(entities)? * commands;
    Ok(Record::throughput(
        backend,
        format!("seq {entities}x{commands}"),
        total,
        elapsed,
        &mut latencies,
    ))
}

/// `hot`: one counter, `senders` concurrent tasks, `commands` in all.
pub(crate) async fn hot<L: EventLog, S: SnapshotStore>(
    backend: &'static str,
    fresh: &Fresh<L, S>,
    senders: u64,
    commands: u64,
) -> Result<Record, BoxError> {
    let id = "hot";
    let counter = spawn(fresh, id, 0).await?;
    // Sender k sends commands/senders, the first commands%senders one more.
    let shares: Vec<u64> = (0..senders)
        .map(|k| commands / senders + u64::from(k < commands % senders))
        .collect();

    let start = Instant::now();
    let tasks: Vec<_> = shares
        .iter()
        .map(|&share| {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(usize::try_from(share).unwrap_or(0));
                for i in 0..share {
                    let sent = Instant::now();
                    send(&counter, i).await?;
                    latencies.push(micros(sent.elapsed()));
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    drop(counter);

    let expected_value = shares.iter().map(|&share| value_after(share)).sum();
    verify(fresh, &[(id.to_owned(), commands, expected_value)]).await?;
    Ok(Record::throughput(
        backend,
        format!("hot {senders} senders"),
        commands,
        elapsed,
        &mut latencies,
    ))
}

/// Checks each `(id, events, value)`: the log holds exactly `events` events
/// with seq_nos 1..=events, and a respawned entity replies `value` to `Get`.
async fn verify<L: EventLog, S: SnapshotStore>(
    fresh: &Fresh<L, S>,
    expected: &[(String, u64, u64)],
) -> Result<(), BoxError> {
    stream::iter(expected)
        .map(Ok)
        .try_for_each_concurrent(CONCURRENCY, |(id, events, value)| async move {
            let events = &(events + u64::from(SABOTAGE_VERIFICATION.load(Ordering::Relaxed)));
            let stored = count_events(&fresh.log, id).await?;
            if stored != *events {
                return Err(format!(
                    "verification failed: entity {id} has {stored} events in the log, but {events} commands were acknowledged"
                )
                .into());
            }
            let last = fresh.log.last_seq_no(Counter::TYPE_NAME, id).await?;
            if last != SeqNo::new(*events) {
                return Err(format!(
                    "verification failed: entity {id} has last seq_no {last}, expected {events}"
                )
                .into());
            }
            let counter = spawn(fresh, id, 0).await?;
            let recovered = get(&counter).await?;
            if recovered != *value {
                return Err(format!(
                    "verification failed: entity {id} recovered the value {recovered}, expected {value}"
                )
                .into());
            }
            Ok::<_, BoxError>(())
        })
        .await
}

/// Counts the entity's events, checking that seq_nos run 1, 2, 3... .
async fn count_events<L: EventLog>(log: &L, id: &str) -> Result<u64, BoxError> {
    let mut events = std::pin::pin!(log.events_by_id(Counter::TYPE_NAME, id, SeqNo::new(1)));
    let mut count = 0;
    while let Some(event) = events.next().await {
        let (seq_no, _) = event?;
        count += 1;
        if seq_no != SeqNo::new(count) {
            return Err(format!(
                "verification failed: event {count} of entity {id} has seq_no {seq_no}"
            )
            .into());
        }
    }
    Ok(count)
}

async fn get(counter: &EntityRef<Counter>) -> Result<u64, BoxError> {
    counter
        .handle_command(Get)
        .await?
        .map_err(|error| format!("Get was rejected with {error:?}").into())
}

/// `recovery`: writes `events` events for each of `entities` counters straight
/// to the log, `per_append` events per append (and, with `snapshot_every`, the
/// snapshot an entity would have taken last), then times respawning all of them concurrently until each has
/// replied to its first command.
pub(crate) async fn recovery<L: EventLog, S: SnapshotStore>(
    backend: &'static str,
    fresh: &Fresh<L, S>,
    entities: usize,
    events: u64,
    per_append: usize,
    snapshot_every: Option<u64>,
) -> Result<Record, BoxError> {
    let ids: Vec<String> = (0..entities).map(|i| format!("recovery-{i}")).collect();
    let snapshot_seq_no = snapshot_every.map_or(0, |every| events / every * every);
    // Only a recovery that read the snapshot has the snapshot's offset.
    let expected = value_after(events)
        + if snapshot_seq_no > 0 {
            SNAPSHOT_MARK
        } else {
            0
        };
    stream::iter(&ids)
        .map(Ok)
        .try_for_each_concurrent(CONCURRENCY, |id| {
            populate(fresh, id, events, per_append, snapshot_seq_no)
        })
        .await?;

    let start = Instant::now();
    let latencies: Vec<u32> = stream::iter(&ids)
        .map(|id| async move {
            let counter = spawn(fresh, id, snapshot_every.unwrap_or(0)).await?;
            let value = get(&counter).await?;
            let took = micros(start.elapsed());
            if value != expected {
                return Err(format!(
                    "verification failed: entity {id} recovered the value {value}, expected {expected}{}",
                    if value == value_after(events) { " (its snapshot was not read)" } else { "" }
                )
                .into());
            }
            Ok::<_, BoxError>(took)
        })
        .buffer_unordered(entities.max(1))
        .try_collect()
        .await?;
    let elapsed = start.elapsed();

    let replayed = u64::try_from(entities)? * (events - snapshot_seq_no);
    Ok(Record::replay(
        backend,
        match snapshot_every {
            Some(every) => format!("recovery {entities}x{events} snap/{every}"),
            None => format!("recovery {entities}x{events}"),
        },
        u64::try_from(entities)?,
        replayed,
        elapsed,
        &mut latencies.clone(),
    )
    .with_note(format!(
        "{replayed} events replayed, written {per_append} per append; p50/p99: first reply per entity"
    )))
}

/// Added to the state of the snapshots that `populate` saves, so that a
/// recovery that ignored its snapshot (and replayed every event) shows.
const SNAPSHOT_MARK: u64 = 1_000_000;

/// Appends `events` events for `id`, `per_append` at a time, and saves the
/// snapshot as of `snapshot_seq_no` unless it is 0 (its state offset by
/// [`SNAPSHOT_MARK`]).
async fn populate<L: EventLog, S: SnapshotStore>(
    fresh: &Fresh<L, S>,
    id: &str,
    events: u64,
    per_append: usize,
    snapshot_seq_no: u64,
) -> Result<(), BoxError> {
    let encoded = [
        Binarize::encode(&SerdeJson, &event_for(0))?,
        Binarize::encode(&SerdeJson, &event_for(1))?,
    ];
    let mut last = SeqNo::ZERO;
    let mut chunk: Vec<Bytes> = Vec::with_capacity(per_append);
    for i in 0..events {
        chunk.push(encoded[usize::from(i % 2 == 1)].clone());
        if chunk.len() >= per_append || i + 1 == events {
            last = fresh
                .log
                .append(Counter::TYPE_NAME, id, last, &chunk)
                .await?;
            chunk.clear();
        }
    }
    if snapshot_seq_no > 0 {
        let state = Binarize::encode(
            &SerdeJson,
            &Counter(value_after(snapshot_seq_no) + SNAPSHOT_MARK),
        )?;
        fresh
            .snapshots
            .save(Counter::TYPE_NAME, id, SeqNo::new(snapshot_seq_no), state)
            .await?;
    }
    Ok(())
}

/// `idle`: spawns `entities` counters and reports the RSS growth per entity.
pub(crate) async fn idle<L: EventLog, S: SnapshotStore>(
    backend: &'static str,
    fresh: &Fresh<L, S>,
    entities: usize,
) -> Result<Record, BoxError> {
    let ids: Vec<String> = (0..entities).map(|i| format!("idle-{i}")).collect();
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let mut counters = Vec::with_capacity(entities);
    let rss_before = proc_status_kib("VmRSS").ok_or("cannot read VmRSS from /proc/self/status")?;
    let start = Instant::now();
    for id in &ids {
        counters.push(spawn(fresh, id, 0).await?);
    }
    let elapsed = start.elapsed();
    // Let every entity task run up to its first wait for a command.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rss_after = proc_status_kib("VmRSS").ok_or("cannot read VmRSS from /proc/self/status")?;

    // Every entity is alive and answers.
    for counter in &counters {
        let value = get(counter).await?;
        if value != 0 {
            return Err(format!(
                "verification failed: idle entity {} has the value {value}",
                counter.id()
            )
            .into());
        }
    }
    // What the two tokio parts of an entity cost on their own, measured on
    // top (nothing freed yet, so no freed memory is reused): its mailbox (a
    // bounded mpsc channel of the default size) and a task parked on it.
    let peak = proc_status_kib("VmHWM");
    let (mailbox_bytes, task_bytes, parts) = tokio_parts(entities).await?;

    // Stop the entities and wait for their tasks to end, so that they do not
    // run during the next workload.
    drop(parts);
    drop(counters);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.num_alive_tasks() > tasks_before {
        if Instant::now() > deadline {
            return Err(format!(
                "{} idle entity tasks still run 30 s after their handles were dropped",
                metrics.num_alive_tasks() - tasks_before
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let growth = rss_after.saturating_sub(rss_before) * 1024;
    #[allow(clippy::cast_precision_loss)] // exact below 2^52
    let per_entity = growth as f64 / entities.max(1) as f64;
    let mut record = Record::throughput(
        backend,
        format!("idle {entities}"),
        u64::try_from(entities)?,
        elapsed,
        &mut [],
    );
    record.commands_per_s = None;
    record.rss_bytes_per_entity = Some(per_entity);
    // The peak of the entities, before the probe of the tokio parts.
    record.peak_rss_kib = peak;
    record.note = format!(
        "RSS {rss_before} -> {rss_after} KiB; state {} B; of each entity: mailbox ~{mailbox_bytes:.0} B, parked tokio task ~{task_bytes:.0} B (bare), EntityRef + id kept by the caller ~{} B",
        std::mem::size_of::<Counter>(),
        std::mem::size_of::<EntityRef<Counter>>() + 32
    );
    Ok(record)
}

/// Boxed messages, as in an entity's mailbox.
type AnyMessage = Box<dyn std::any::Any + Send>;

/// Parts kept alive until the caller drops them.
type Parts = (
    Vec<tokio::sync::mpsc::Sender<AnyMessage>>,
    Vec<tokio::task::JoinHandle<()>>,
);

/// RSS per bare mailbox (channel of the default capacity) and per task
/// parked on its receiver, measured with `n` of each.
async fn tokio_parts(n: usize) -> Result<(f64, f64, Parts), BoxError> {
    let capacity = eventsourced::EntityOptions::default().mailbox_size;
    let rss = || proc_status_kib("VmRSS").ok_or("cannot read VmRSS from /proc/self/status");
    let before = rss()?;
    let mut senders = Vec::with_capacity(n);
    let mut receivers = Vec::with_capacity(n);
    for _ in 0..n {
        let (sender, receiver) = tokio::sync::mpsc::channel::<AnyMessage>(capacity);
        senders.push(sender);
        receivers.push(receiver);
    }
    let with_channels = rss()?;
    let tasks: Vec<_> = receivers
        .into_iter()
        .map(|mut receiver| tokio::spawn(async move { while receiver.recv().await.is_some() {} }))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let with_tasks = rss()?;
    #[allow(clippy::cast_precision_loss)] // exact below 2^52
    let per = |kib: u64| (kib * 1024) as f64 / n.max(1) as f64;
    Ok((
        per(with_channels.saturating_sub(before)),
        per(with_tasks.saturating_sub(with_channels)),
        (senders, tasks),
    ))
}

/// `raw`, through the backend's `EventLog` but without the entity runtime:
/// `appends` sequential one-event appends to one entity, each awaited. Between
/// the server's raw ceiling and `seq 1x...`, it tells the backend's share from
/// the runtime's.
pub(crate) async fn log_append<L: EventLog, S: SnapshotStore>(
    backend: &'static str,
    fresh: &Fresh<L, S>,
    appends: u64,
) -> Result<Record, BoxError> {
    let id = "log-append";
    let events = [
        Binarize::encode(&SerdeJson, &event_for(0))?,
        Binarize::encode(&SerdeJson, &event_for(1))?,
    ];
    // Warm-up, not timed, on another entity.
    let mut last = SeqNo::ZERO;
    for _ in 0..appends / 10 {
        last = fresh
            .log
            .append(Counter::TYPE_NAME, "log-append-warmup", last, &events[..1])
            .await?;
    }

    // On a worker thread, as an entity's appends are.
    let log = fresh.log.clone();
    let (mut latencies, elapsed) = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(usize::try_from(appends)?);
        let mut last = SeqNo::ZERO;
        let start = Instant::now();
        for i in 0..appends {
            let sent = Instant::now();
            last = log
                .append(
                    Counter::TYPE_NAME,
                    id,
                    last,
                    std::slice::from_ref(&events[usize::from(i % 2 == 1)]),
                )
                .await?;
            latencies.push(micros(sent.elapsed()));
        }
        Ok::<_, BoxError>((latencies, start.elapsed()))
    })
    .await??;
    verify(fresh, &[(id.to_owned(), appends, value_after(appends))]).await?;
    Ok(Record::throughput(
        backend,
        "log append 1-event",
        appends,
        elapsed,
        &mut latencies,
    )
    .with_note("EventLog::append awaited one by one, no entity; p50/p99 per append"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventsourced::{MemoryEventLog, NoopSnapshotStore};

    /// The snapshots that `recovery` saves hold a state that replaying the
    /// events cannot give, so a recovery that ignored them fails the check.
    #[tokio::test]
    async fn recovery_that_ignores_its_snapshots_fails_verification() {
        let without_snapshots = Fresh {
            log: MemoryEventLog::default(),
            snapshots: NoopSnapshotStore,
            place: "memory".to_owned(),
        };
        let error = recovery("memory", &without_snapshots, 2, 200, 1, Some(64))
            .await
            .expect_err("the saved snapshots were dropped, so recovery replayed every event");
        assert!(
            error.to_string().contains("its snapshot was not read"),
            "{error}"
        );
        let with_snapshots = Fresh {
            log: MemoryEventLog::default(),
            snapshots: eventsourced::MemorySnapshotStore::default(),
            place: "memory".to_owned(),
        };
        recovery("memory", &with_snapshots, 2, 200, 1, Some(64))
            .await
            .expect("a recovery from the snapshots passes");
    }
}
