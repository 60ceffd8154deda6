//! Prints how fast the log appends: raw SQLite commits as the ceiling, then
//! `entities` concurrent writers each appending `appends` single events one
//! after another (group commit merges them).
//!
//! ```sh
//! cargo run --release -p eventsourced-sqlite --example append_throughput -- [entities] [appends] [fast]
//! ```

use bytes::Bytes;
use eventsourced::{EventLog, SeqNo};
use eventsourced_sqlite::{Durability, SqliteConfig, SqliteEventLog};
use futures::TryStreamExt;
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let entities: u64 = args.next().map_or(Ok(100), |a| a.parse())?;
    let appends: u64 = args.next().map_or(Ok(200), |a| a.parse())?;
    let fast = args.next().as_deref() == Some("fast");
    let dir = tempfile::tempdir()?;

    // The ceiling: one row per durable commit, straight through rusqlite.
    let raw = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    raw.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {};
         CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);",
        if fast { "NORMAL" } else { "FULL" }
    ))?;
    let started = Instant::now();
    for _ in 0..500 {
        raw.execute("INSERT INTO t (v) VALUES (x'00112233')", [])?;
    }
    let raw_rate = 500.0 / started.elapsed().as_secs_f64();
    println!("raw commit 1-row: {raw_rate:.0} commits/s");

    let mut config = SqliteConfig::default();
    if fast {
        config.durability = Durability::Fast;
    }
    let log = SqliteEventLog::open_with(dir.path().join("log.db"), config)?;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let writers: Vec<_> = (0..entities)
        .map(|e| {
            let log = log.clone();
            tokio::spawn(async move {
                let id = format!("e{e}");
                let event = Bytes::from_static(b"{\"Increased\":1}");
                for n in 0..appends {
                    log.append("counter", &id, SeqNo::new(n), std::slice::from_ref(&event))
                        .await?;
                }
                Ok::<_, eventsourced::EventLogError>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let total = entities * appends;
    let elapsed = started.elapsed();
    println!(
        "{entities} entities x {appends} sequential appends: {:.0} appends/s ({:.1} ms)",
        total as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0
    );

    println!(
        "  process CPU: {:.1} µs per append",
        (cpu_seconds() - cpu_before) * 1e6 / total as f64
    );
    let started = Instant::now();
    let mut read = 0u64;
    for e in 0..entities {
        let events: Vec<_> = log
            .events_by_id("counter", &format!("e{e}"), SeqNo::new(1))
            .try_collect()
            .await?;
        read += events.len() as u64;
    }
    let elapsed = started.elapsed();
    println!(
        "replay of {read} events, entity after entity: {:.0} events/s ({:.1} ms)",
        read as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0
    );

    // What recovering all entities at once reads: a snapshot and the events.
    let snapshots = log.snapshot_store();
    let started = Instant::now();
    let reads: Vec<_> = (0..entities)
        .map(|e| {
            let (log, snapshots) = (log.clone(), snapshots.clone());
            tokio::spawn(async move {
                let id = format!("e{e}");
                let _ = eventsourced::SnapshotStore::load(&snapshots, "counter", &id).await?;
                let events: Vec<_> = log
                    .events_by_id("counter", &id, SeqNo::new(1))
                    .try_collect()
                    .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(events.len())
            })
        })
        .collect();
    let mut read = 0;
    for r in reads {
        read += r.await?.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed();
    println!(
        "concurrent recovery reads of {entities} entities ({read} events): {:.1} ms",
        elapsed.as_secs_f64() * 1000.0
    );

    // One long entity, replayed from the start.
    let big = 100_000u64;
    let event = Bytes::from_static(b"{\"Increased\":1}");
    let batch = vec![event; 1000];
    for n in 0..big / 1000 {
        log.append("long", "one", SeqNo::new(n * 1000), &batch)
            .await?;
    }
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let events: Vec<_> = log
        .events_by_id("long", "one", SeqNo::new(1))
        .try_collect()
        .await?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "replay of one entity's {} events: {:.0} events/s ({:.1} ms, {:.0} ms CPU)",
        events.len(),
        events.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0,
        cpu * 1000.0
    );
    Ok(())
}

/// User + system CPU time of this process so far (Linux), for a number that
/// a busy machine distorts less than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    // utime and stime are fields 14 and 15, i.e. 12 and 13 after the ')'.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}
