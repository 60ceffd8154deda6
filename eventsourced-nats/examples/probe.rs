//! A quick throughput probe of the NATS log against `NATS_URL` (the real
//! benchmark is `eventsourced-bench`). Prints numbers; asserts nothing.
//!
//! ```sh
//! NATS_URL=nats://127.0.0.1:4222 cargo run --release -p eventsourced-nats --example probe
//! ```

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use eventsourced::{EventLog, SeqNo, testkit::unique_type_name};
use eventsourced_nats::{NatsConfig, NatsEventLog};
use futures::{StreamExt, TryStreamExt};
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").map_err(|_| "set NATS_URL")?;
    let log = NatsEventLog::new(NatsConfig::from_url(&url)).await?;
    log.setup().await?;
    let event = Bytes::from_static(b"{\"Increased\":1}");

    // Raw ceiling: sequential acknowledged publishes to a stream of its own.
    let js = jetstream::new(log.client().clone());
    let raw = format!("probe-raw-{}", std::process::id());
    js.create_stream(stream::Config {
        name: raw.clone(),
        subjects: vec![format!("{raw}.>")],
        ..Default::default()
    })
    .await?;
    let n = 1000;
    let type_name = unique_type_name("probe");
    let (mut raw_time, mut log_time, mut expect_time) = (0.0, 0.0, 0.0);
    let mut last = SeqNo::ZERO;
    let mut last_raw_seq = 0u64;
    // Alternate rounds so that changing machine load hits both alike.
    for _ in 0..4 {
        let start = Instant::now();
        for _ in 0..n / 4 {
            js.publish(format!("{raw}.x"), event.clone()).await?.await?;
        }
        raw_time += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..n / 4 {
            last = log
                .append(&type_name, "one", last, std::slice::from_ref(&event))
                .await?;
        }
        log_time += start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..n / 4 {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                async_nats::HeaderValue::from(last_raw_seq),
            );
            last_raw_seq = js
                .publish_with_headers(format!("{raw}.y"), headers, event.clone())
                .await?
                .await?
                .sequence;
        }
        expect_time += start.elapsed().as_secs_f64();
    }
    println!(
        "raw sequential publish with expected-last-subject-sequence: {:.0}/s",
        f64::from(n) / expect_time
    );
    let raw_rate = f64::from(n) / raw_time;
    let seq_rate = f64::from(n) / log_time;
    println!("raw sequential publish: {raw_rate:.0}/s");
    println!(
        "1 entity x {n} sequential appends: {seq_rate:.0}/s ({:.0}% of raw)",
        100.0 * seq_rate / raw_rate
    );
    js.delete_stream(&raw).await?;

    let start = Instant::now();
    let tasks: Vec<_> = (0..100)
        .map(|e| {
            let (log, type_name, event) = (log.clone(), type_name.clone(), event.clone());
            tokio::spawn(async move {
                let id = format!("e{e}");
                let mut last = SeqNo::ZERO;
                for _ in 0..200 {
                    last = log
                        .append(&type_name, &id, last, std::slice::from_ref(&event))
                        .await?;
                }
                Ok::<_, eventsourced::EventLogError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    println!(
        "100 entities x 200 appends, concurrent: {:.0}/s",
        20_000.0 / start.elapsed().as_secs_f64()
    );

    let start = Instant::now();
    let reads: Vec<_> = (0..100)
        .map(|e| {
            let (log, type_name) = (log.clone(), type_name.clone());
            tokio::spawn(async move {
                log.events_by_id(&type_name, &format!("e{e}"), SeqNo::new(1))
                    .try_collect::<Vec<_>>()
                    .await
            })
        })
        .collect();
    let mut events = 0;
    for read in reads {
        events += read.await??.len();
    }
    println!(
        "read back 100 x 200 ({events} events), concurrent: {:?}",
        start.elapsed()
    );

    // Consumer overhead: 100 entities of 2 messages each, read concurrently.
    let small = unique_type_name("probe-small");
    for e in 0..100 {
        let id = format!("s{e}");
        log.append(&small, &id, SeqNo::ZERO, std::slice::from_ref(&event))
            .await?;
        log.append(&small, &id, SeqNo::new(1), std::slice::from_ref(&event))
            .await?;
    }
    let start = Instant::now();
    let reads: Vec<_> = (0..100)
        .map(|e| {
            let (log, small) = (log.clone(), small.clone());
            tokio::spawn(async move {
                log.events_by_id(&small, &format!("s{e}"), SeqNo::new(1))
                    .try_collect::<Vec<_>>()
                    .await
            })
        })
        .collect();
    for read in reads {
        read.await??;
    }
    println!(
        "100 x 2 messages read concurrently (consumer overhead): {:?}",
        start.elapsed()
    );

    let start = Instant::now();
    let all: Vec<_> = log
        .events_by_type(&type_name, eventsourced::Position::START)
        .take(20_000)
        .try_collect()
        .await?;
    println!(
        "events_by_type, one consumer, {} events: {:?}",
        all.len(),
        start.elapsed()
    );

    let start = Instant::now();
    let reads: Vec<_> = (0..100)
        .map(|e| {
            let (log, type_name) = (log.clone(), type_name.clone());
            tokio::spawn(async move { log.last_seq_no(&type_name, &format!("e{e}")).await })
        })
        .collect();
    for read in reads {
        read.await??;
    }
    println!("100 last_seq_no, concurrent: {:?}", start.elapsed());
    Ok(())
}
