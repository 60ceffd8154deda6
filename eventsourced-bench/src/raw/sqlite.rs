//! SQLite write ceilings: event rows written with rusqlite directly, one
//! commit per row, then one transaction per batch, into the table and indexes
//! of the SQLite log (schema version 1), with its default durability (WAL,
//! `synchronous = FULL`).

use crate::{
    BoxError, Scale,
    report::{Record, micros},
};
use rusqlite::{Connection, params};
use std::{path::Path, time::Instant};

/// Runs on a blocking thread: rusqlite is synchronous.
pub(crate) async fn ceilings(file: &Path, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let file = file.to_owned();
    let scale = scale.clone();
    let records = tokio::task::spawn_blocking(move || measure(&file, &scale)).await??;
    Ok(records)
}

fn measure(file: &Path, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let connection = Connection::open(file)?;
    connection.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE events (
             position  INTEGER PRIMARY KEY,
             type_name TEXT    NOT NULL,
             entity_id TEXT    NOT NULL,
             seq_no    INTEGER NOT NULL,
             event     BLOB    NOT NULL
         );
         CREATE UNIQUE INDEX events_by_entity ON events (type_name, entity_id, seq_no);
         CREATE INDEX events_by_type ON events (type_name);",
    )?;
    let event: &[u8] = br#"{"Increased":2}"#;
    let type_name = "bench-counter";
    let sql = "INSERT INTO events (type_name, entity_id, seq_no, event) VALUES (?1, ?2, ?3, ?4)";

    // Warm-up, not timed.
    for seq_no in 1..=i64::try_from(scale.warmup())? {
        connection.execute(sql, params![type_name, "raw-warmup", seq_no, event])?;
    }

    let mut latencies = Vec::new();
    let start = Instant::now();
    {
        let mut insert = connection.prepare_cached(sql)?;
        for seq_no in 1..=i64::try_from(scale.raw_single)? {
            let sent = Instant::now();
            insert.execute(params![type_name, "raw-single", seq_no, event])?;
            latencies.push(micros(sent.elapsed()));
        }
    }
    let single = Record::throughput(
        "sqlite",
        "raw commit 1-row",
        scale.raw_single,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("INSERT per row in autocommit, WAL, synchronous=FULL; p50/p99 per commit");

    let rows = i64::try_from(scale.raw_batch_size)?;
    let batches = scale.raw_batched / scale.raw_batch_size;
    let mut latencies = Vec::new();
    let mut connection = connection;
    let start = Instant::now();
    for batch in 0..i64::try_from(batches)? {
        let sent = Instant::now();
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(sql)?;
            for seq_no in batch * rows + 1..=(batch + 1) * rows {
                insert.execute(params![type_name, "raw-batched", seq_no, event])?;
            }
        }
        transaction.commit()?;
        latencies.push(micros(sent.elapsed()));
    }
    let batched = Record::throughput(
        "sqlite",
        format!("raw commit {rows}-row tx"),
        batches * scale.raw_batch_size,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("rows/s; one transaction per batch; p50/p99 per commit");
    Ok(vec![single, batched])
}
