//! SQLite ceilings: event rows written with rusqlite directly, one commit per
//! row, then one transaction per batch, into the table and indexes of the
//! SQLite log (its own schema, created by opening the log), with its default
//! durability (WAL, `synchronous = FULL`); then the read ceiling of
//! `recovery`: many entities' rows read back with the log's query on as many
//! threads as the log has read connections.

use crate::{
    BoxError, Scale,
    report::{Record, micros},
};
use eventsourced_sqlite::{SqliteConfig, SqliteEventLog};
use rusqlite::{Connection, OpenFlags, params};
use std::{
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};
use tokio::sync::oneshot;

const INSERT: &str = "INSERT INTO events (type_name, entity_id, seq_no, position, event) VALUES (?1, ?2, ?3, ?4, ?5)";

/// Runs on a blocking thread: rusqlite is synchronous.
pub(crate) async fn ceilings(file: &Path, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    // The log creates its schema; closed again before the raw writes start.
    drop(SqliteEventLog::open(file)?);
    let file = file.to_owned();
    let scale = scale.clone();
    let mut records = {
        let (file, scale) = (file.clone(), scale.clone());
        tokio::task::spawn_blocking(move || write(&file, &scale)).await??
    };
    records.push(through_a_thread(&file, &scale).await?);
    records.extend(tokio::task::spawn_blocking(move || interleaved(&file, &scale)).await??);
    Ok(records)
}

fn write(file: &Path, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let mut connection = Connection::open(file)?;
    connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    let event = super::EVENT;
    let type_name = super::TYPE_NAME;
    // Positions: the warm-up far above the measured rows, which follow each
    // other.
    let mut position = 0_i64;

    // Warm-up, not timed.
    for seq_no in 1..=i64::try_from(scale.warmup())? {
        connection.execute(
            INSERT,
            params![
                type_name,
                "raw-warmup",
                seq_no,
                1_000_000_000 + seq_no,
                event
            ],
        )?;
    }

    let mut latencies = Vec::new();
    let start = Instant::now();
    {
        let mut insert = connection.prepare_cached(INSERT)?;
        for seq_no in 1..=i64::try_from(scale.raw_single)? {
            position += 1;
            let sent = Instant::now();
            insert.execute(params![type_name, "raw-single", seq_no, position, event])?;
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

    let mut records = vec![single];
    for rows in scale.raw_batch_sizes() {
        records.push(batched(&mut connection, scale, rows, &mut position)?);
    }
    Ok(records)
}

/// One transaction per `rows` rows of one entity, `scale.raw_batched` rows in
/// all; `position` is the last position written before.
fn batched(
    connection: &mut Connection,
    scale: &Scale,
    rows: u64,
    position: &mut i64,
) -> Result<Record, BoxError> {
    let event = super::EVENT;
    let id = format!("raw-batched-{rows}");
    let batches = scale.raw_batched / rows;
    let rows = i64::try_from(rows)?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    for batch in 0..i64::try_from(batches)? {
        let sent = Instant::now();
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(INSERT)?;
            for seq_no in batch * rows + 1..=(batch + 1) * rows {
                *position += 1;
                insert.execute(params![super::TYPE_NAME, id, seq_no, *position, event])?;
            }
        }
        transaction.commit()?;
        latencies.push(micros(sent.elapsed()));
    }
    Ok(Record::throughput(
        "sqlite",
        format!("raw commit {rows}-row tx"),
        batches * u64::try_from(rows)?,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("rows/s; one transaction per batch; p50/p99 per commit"))
}

/// Single-row commits as an async caller gets them from a blocking SQLite
/// connection: the connection on a thread of its own, each insert sent to it
/// from a tokio task and answered through a oneshot channel. What the
/// SQLite log's sequential appends pay beyond `raw commit 1-row` for being
/// async, before any SQL of their own.
async fn through_a_thread(file: &Path, scale: &Scale) -> Result<Record, BoxError> {
    type Insert = (i64, oneshot::Sender<rusqlite::Result<usize>>);
    let (requests, inbox) = std::sync::mpsc::channel::<Insert>();
    let file = file.to_owned();
    let thread = std::thread::spawn(move || -> rusqlite::Result<()> {
        let connection = Connection::open(&file)?;
        connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
        let mut insert = connection.prepare_cached(INSERT)?;
        let event = super::EVENT;
        while let Ok((seq_no, reply)) = inbox.recv() {
            // Above every other position of the raw workload.
            let position = 3_000_000_000 + seq_no;
            let _ = reply.send(insert.execute(params![
                super::TYPE_NAME,
                "raw-thread",
                seq_no,
                position,
                event
            ]));
        }
        Ok(())
    });
    let mut latencies = Vec::new();
    let start = Instant::now();
    for seq_no in 1..=i64::try_from(scale.raw_single)? {
        let sent = Instant::now();
        let (reply, replied) = oneshot::channel();
        requests
            .send((seq_no, reply))
            .map_err(|_| "the SQLite thread ended")?;
        replied.await.map_err(|_| "the SQLite thread ended")??;
        latencies.push(micros(sent.elapsed()));
    }
    let elapsed = start.elapsed();
    drop(requests);
    thread.join().map_err(|_| "the SQLite thread panicked")??;
    Ok(Record::throughput(
        "sqlite",
        "raw commit 1-row via a thread",
        scale.raw_single,
        elapsed,
        &mut latencies,
    )
    .with_note(
        "as raw commit 1-row, on a thread of its own, each INSERT sent from a tokio task and answered through a oneshot; p50/p99 per commit",
    ))
}

/// The ceilings of many entities: `entities x events` one-event rows, written
/// one row per entity per transaction (`seq 100x200`'s group commits at
/// best: each entity has one command in flight), in the order concurrent
/// appends leave them; then read back with the log's query, one entity after
/// another on each of as many threads (with a connection each) as the log's
/// default read connections (the ceiling of `recovery 100x200`). Checks
/// every row.
fn interleaved(file: &Path, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let (entities, events) = scale.raw_read;
    let event = super::EVENT;
    let type_name = "bench-read";
    let ids: Vec<String> = (0..entities).map(|e| format!("read-{e}")).collect();
    let mut connection = Connection::open(file)?;
    connection.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;")?;
    // Above every position of the write ceilings.
    let mut position = 2_000_000_000_i64;
    let mut latencies = Vec::new();
    let start = Instant::now();
    for seq_no in 1..=i64::try_from(events)? {
        let sent = Instant::now();
        let transaction = connection.transaction()?;
        {
            let mut insert = transaction.prepare_cached(INSERT)?;
            for id in &ids {
                position += 1;
                insert.execute(params![type_name, id, seq_no, position, event])?;
            }
        }
        transaction.commit()?;
        latencies.push(micros(sent.elapsed()));
    }
    let written = Record::throughput(
        "sqlite",
        format!("raw commit {entities}-entity tx"),
        entities * events,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(format!(
        "rows/s; one transaction of {entities} rows, one row per entity; p50/p99 per commit"
    ));
    drop(connection);

    let threads = SqliteConfig::default().read_connections;
    let mut connections = Vec::with_capacity(threads);
    for _ in 0..threads {
        let connection = Connection::open_with_flags(
            file,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connections.push(connection);
    }
    let sql = "SELECT seq_no, event FROM events \
         WHERE type_name = ?1 AND entity_id = ?2 AND seq_no >= ?3 ORDER BY seq_no";
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<Result<Vec<u32>, String>> = std::thread::scope(|scope| {
        let readers: Vec<_> = connections
            .into_iter()
            .map(|connection| {
                let (next, ids) = (&next, &ids);
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut select = connection.prepare_cached(sql).map_err(|e| e.to_string())?;
                    loop {
                        let entity = next.fetch_add(1, Ordering::Relaxed);
                        let Some(id) = usize::try_from(entity).ok().and_then(|e| ids.get(e)) else {
                            return Ok(latencies);
                        };
                        let mut rows = select
                            .query(params![type_name, id, 1_i64])
                            .map_err(|e| e.to_string())?;
                        let mut expected = 1_i64;
                        while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                            let seq_no: i64 = row.get(0).map_err(|e| e.to_string())?;
                            let bytes: Vec<u8> = row.get(1).map_err(|e| e.to_string())?;
                            if seq_no != expected || bytes != event {
                                return Err(format!("{id}: row {expected} is seq_no {seq_no}"));
                            }
                            expected += 1;
                        }
                        if u64::try_from(expected - 1).ok() != Some(events) {
                            return Err(format!("{id}: {} rows, expected {events}", expected - 1));
                        }
                        latencies.push(micros(start.elapsed()));
                    }
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|_| Err("a reader panicked".to_owned()))
            })
            .collect()
    });
    let elapsed = start.elapsed();
    let mut latencies = Vec::new();
    for result in results {
        latencies.extend(result?);
    }
    let read = Record::replay(
        "sqlite",
        format!("raw read {entities}x{events}"),
        entities,
        entities * events,
        elapsed,
        &mut latencies,
    )
    .with_note(format!(
        "{} rows of {entities} entities, interleaved; the log's SELECT per entity, {threads} threads with a connection each; p50/p99: each entity's last row",
        entities * events
    ));
    Ok(vec![written, read])
}
