//! NATS JetStream ceilings: acknowledged publishes to a fresh stream with
//! async-nats directly, one at a time, then pipelined. Each message carries
//! what an append of the NATS log carries: the event, its seq_no and count
//! headers, and `Nats-Expected-Last-Subject-Sequence`, so the server does the
//! same optimistic-concurrency check. Then the read ceiling of `recovery`:
//! one-event messages of many subjects read back by ordered consumers.

use crate::{
    BoxError, Scale,
    backends::unique,
    report::{Record, micros},
};
use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{self, consumer::pull::OrderedConfig, stream},
};
use bytes::Bytes;
use futures::{StreamExt, stream::FuturesOrdered};
use std::time::Instant;

/// The most publishes awaiting their ack in the pipelined run.
const IN_FLIGHT: usize = 1024;
/// Subjects (entities) the pipelined run writes to, round robin.
const SUBJECTS: u64 = 100;

/// The headers of one event's append, as the NATS log writes them.
fn headers(seq_no: u64, expected_last_subject_seq: u64) -> HeaderMap {
    let mut headers = stored_headers(seq_no);
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        HeaderValue::from(expected_last_subject_seq),
    );
    headers
}

/// The headers a one-event message of the NATS log is stored with.
fn stored_headers(seq_no: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Eventsourced-Seq-No", HeaderValue::from(seq_no));
    headers.insert("Eventsourced-Count", HeaderValue::from(1_u64));
    headers
}

pub(crate) async fn ceilings(url: &str, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let client = async_nats::connect(url)
        .await
        .map_err(|error| format!("cannot connect to NATS at --nats-url / NATS_URL: {error}"))?;
    let context = jetstream::new(client);
    let name = unique("BENCH_RAW").to_uppercase();
    context
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await?;
    // On a worker thread, as the runtime's tasks are: the thread blocking on
    // `main`'s future wakes up slower, which made the ceiling lower than the
    // runtime measured on top of it.
    let result = {
        let (context, name, scale) = (context.clone(), name.clone(), scale.clone());
        tokio::spawn(async move { measure(&context, &name, &scale).await }).await?
    };
    context.delete_stream(&name).await?;
    let mut records = result?;

    // The reads get a stream of their own, as the recovery workload does.
    let name = unique("BENCH_RAW_READ").to_uppercase();
    let stream = context
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await?;
    let result = {
        let (context, scale) = (context.clone(), scale.clone());
        tokio::spawn(async move { read(&context, &stream, &scale).await }).await?
    };
    context.delete_stream(&name).await?;
    records.extend(result?);
    Ok(records)
}

async fn measure(
    context: &jetstream::Context,
    name: &str,
    scale: &Scale,
) -> Result<Vec<Record>, BoxError> {
    let event = Bytes::from_static(super::EVENT);

    // Warm-up, not timed: connection, stream files, server caches.
    let warmup = format!("{name}.warmup");
    for _ in 0..scale.warmup() {
        context
            .publish(warmup.clone(), event.clone())
            .await?
            .await?;
    }

    let subject = format!("{name}.single");
    let mut latencies = Vec::new();
    let mut last_subject_seq = 0;
    let start = Instant::now();
    for seq_no in 1..=scale.raw_single {
        let sent = Instant::now();
        let ack = context
            .publish_with_headers(
                subject.clone(),
                headers(seq_no, last_subject_seq),
                event.clone(),
            )
            .await?
            .await?;
        last_subject_seq = ack.sequence;
        latencies.push(micros(sent.elapsed()));
    }
    let single = Record::throughput(
        "nats",
        "raw publish sequential",
        scale.raw_single,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("publish, await its ack, next; p50/p99 per publish");

    let subjects: Vec<String> = (0..SUBJECTS)
        .map(|s| format!("{name}.pipelined.{s}"))
        .collect();
    // One connection keeps the order, so message k gets stream sequence
    // first + k, and the previous one on its subject is k - SUBJECTS.
    let first = last_subject_seq + 1;
    let messages = (0..scale.raw_batched).map(|k| {
        let subject = subjects[usize::try_from(k % SUBJECTS).unwrap_or(0)].clone();
        let expected = if k < SUBJECTS {
            0
        } else {
            first + k - SUBJECTS
        };
        (subject, headers(k / SUBJECTS + 1, expected))
    });
    let start = Instant::now();
    let mut latencies = publish_pipelined(context, messages, &event).await?;
    let pipelined = Record::throughput(
        "nats",
        "raw publish pipelined",
        scale.raw_batched,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(format!(
        "{SUBJECTS} subjects, up to {IN_FLIGHT} acks in flight; p50/p99 publish to ack"
    ));
    Ok(vec![single, pipelined])
}

/// The read ceilings of `recovery`: `entities x events` one-event messages,
/// published (untimed) round robin over one subject per entity, as
/// concurrent appends leave them, then read back
///
/// - by one ordered consumer over all of the subjects: the fastest way out
///   of the server, which need not look for any subject's next message;
/// - by one ordered consumer per subject, all at once, as the NATS log reads
///   an entity whose events are not all in its last few messages.
///
/// Both check that every message arrived.
async fn read(
    context: &jetstream::Context,
    stream: &stream::Stream,
    scale: &Scale,
) -> Result<Vec<Record>, BoxError> {
    let (entities, events) = scale.raw_read;
    let name = &stream.cached_info().config.name;
    let event = Bytes::from_static(super::EVENT);
    let subject = |entity: u64| format!("{name}.read.{entity}");
    let messages = (1..=events).flat_map(|seq_no| {
        (0..entities).map(move |entity| (subject(entity), stored_headers(seq_no)))
    });
    publish_pipelined(context, messages, &event).await?;
    let total = entities * events;
    let shape = format!("{entities}x{events}");

    let start = Instant::now();
    let all = read_subject(stream, format!("{name}.read.*"), total).await?;
    let one_consumer = Record::replay(
        "nats",
        format!("raw read {shape} 1 consumer"),
        entities,
        all,
        start.elapsed(),
        &mut [],
    )
    .with_note(format!(
        "{total} one-event messages of {entities} subjects, interleaved; one ordered consumer for all"
    ));

    let start = Instant::now();
    let reads = (0..entities).map(|entity| {
        let subject = &subject;
        async move {
            read_subject(stream, subject(entity), events).await?;
            Ok::<_, BoxError>(micros(start.elapsed()))
        }
    });
    let mut latencies = futures::future::try_join_all(reads).await?;
    let per_subject = Record::replay(
        "nats",
        format!("raw read {shape} per subject"),
        entities,
        total,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(format!(
        "{total} one-event messages of {entities} subjects, interleaved; an ordered consumer per subject, all at once; p50/p99: each subject's last message"
    ));
    Ok(vec![one_consumer, per_subject])
}

/// Reads `count` messages of `filter` with an ordered consumer from the
/// start of the stream; fails unless they all arrive.
async fn read_subject(
    stream: &stream::Stream,
    filter: String,
    count: u64,
) -> Result<u64, BoxError> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter.clone(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    for read in 0..count {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| {
                format!(
                    "{filter}: message {} of {count} did not arrive within 10 s",
                    read + 1
                )
            })?
            .ok_or_else(|| {
                format!("{filter}: the consumer ended after {read} of {count} messages")
            })??;
        if message.payload.is_empty() {
            return Err(format!("{filter}: message {} has no event", read + 1).into());
        }
    }
    Ok(count)
}

/// Publishes `messages` (subject, headers) with `event` as payload, at most
/// [`IN_FLIGHT`] awaiting their ack; returns each publish's time to its ack.
async fn publish_pipelined(
    context: &jetstream::Context,
    messages: impl Iterator<Item = (String, HeaderMap)>,
    event: &Bytes,
) -> Result<Vec<u32>, BoxError> {
    let mut pending = FuturesOrdered::new();
    let mut latencies = Vec::new();
    for (subject, headers) in messages {
        if pending.len() >= IN_FLIGHT
            && let Some(acked) = pending.next().await
        {
            latencies.push(acked?);
        }
        let sent = Instant::now();
        let ack = context
            .publish_with_headers(subject, headers, event.clone())
            .await?;
        pending.push_back(async move {
            ack.await?;
            Ok::<_, BoxError>(micros(sent.elapsed()))
        });
    }
    while let Some(acked) = pending.next().await {
        latencies.push(acked?);
    }
    Ok(latencies)
}
