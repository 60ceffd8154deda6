//! NATS JetStream write ceilings: acknowledged publishes to a fresh stream
//! with async-nats directly, one at a time, then pipelined. Each message
//! carries what an append of the NATS log carries: the event, its seq_no and
//! count headers, and `Nats-Expected-Last-Subject-Sequence`, so the server
//! does the same optimistic-concurrency check.

use crate::{
    BoxError, Scale,
    backends::unique,
    report::{Record, micros},
};
use async_nats::{
    HeaderMap, HeaderValue,
    jetstream::{self, stream},
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
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        HeaderValue::from(expected_last_subject_seq),
    );
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
    result
}

async fn measure(
    context: &jetstream::Context,
    name: &str,
    scale: &Scale,
) -> Result<Vec<Record>, BoxError> {
    let event = Bytes::from_static(br#"{"Increased":2}"#);

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
    let mut pending = FuturesOrdered::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    // One connection keeps the order, so message k gets stream sequence
    // first + k, and the previous one on its subject is k - SUBJECTS.
    let first = last_subject_seq + 1;
    for k in 0..scale.raw_batched {
        if pending.len() >= IN_FLIGHT
            && let Some(acked) = pending.next().await
        {
            latencies.push(acked?);
        }
        let sent = Instant::now();
        let subject = &subjects[usize::try_from(k % SUBJECTS)?];
        let expected = if k < SUBJECTS {
            0
        } else {
            first + k - SUBJECTS
        };
        let ack = context
            .publish_with_headers(
                subject.clone(),
                headers(k / SUBJECTS + 1, expected),
                event.clone(),
            )
            .await?;
        pending.push_back(async move {
            ack.await?;
            Ok::<_, BoxError>(micros(sent.elapsed()))
        });
    }
    while let Some(acked) = pending.next().await {
        latencies.push(acked?);
    }
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
