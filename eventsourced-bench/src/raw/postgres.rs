//! PostgreSQL write ceilings: event rows written with plain prepared INSERTs
//! on one connection, without the runtime, into a table shaped like the
//! PostgreSQL log's (primary key on the entity and seq_no, unique position,
//! index on type and position).

use crate::{
    BoxError, Scale,
    backends::unique,
    report::{Record, micros},
};
use std::time::Instant;
use tokio_postgres::{Client, NoTls, types::ToSql};

/// Connects to `url`; the connection is driven by a task of its own.
pub(crate) async fn connect(url: &str) -> Result<Client, BoxError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|error| {
        format!("cannot connect to PostgreSQL (--database-url / DATABASE_URL): {error}")
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("PostgreSQL connection of the raw ceiling ended: {error}");
        }
    });
    Ok(client)
}

/// Single-row prepared INSERTs one after another (each its own transaction),
/// then 100-row multi-row INSERTs, into an event table of a fresh schema.
pub(crate) async fn ceilings(url: &str, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let client = connect(url).await?;
    let schema = unique("bench_raw");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.events (
                 position  BIGINT NOT NULL CHECK (position > 0),
                 type_name TEXT   NOT NULL,
                 id        TEXT   NOT NULL,
                 seq_no    BIGINT NOT NULL CHECK (seq_no > 0),
                 event     BYTEA  NOT NULL,
                 PRIMARY KEY (type_name, id, seq_no),
                 UNIQUE (position)
             );
             CREATE INDEX ON {schema}.events (type_name, position);"
        ))
        .await?;
    // On a worker thread, as the runtime's tasks are: the thread blocking on
    // `main`'s future wakes up slower, which made the ceiling lower than the
    // runtime measured on top of it.
    let (client, result) = {
        let (schema, scale) = (schema.clone(), scale.clone());
        tokio::spawn(async move {
            let result = measure(&client, &schema, &scale).await;
            (client, result)
        })
        .await?
    };
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await?;
    result
}

async fn measure(client: &Client, schema: &str, scale: &Scale) -> Result<Vec<Record>, BoxError> {
    let event: &[u8] = br#"{"Increased":2}"#;
    let type_name = "bench-counter";

    // Single-row, sequential; seq_no doubles as the position.
    let insert = client
        .prepare(&format!(
            "INSERT INTO {schema}.events (position, type_name, id, seq_no, event) VALUES ($3, $1, $2, $3, $4)"
        ))
        .await?;
    // Warm-up, not timed, at positions far above the measured ones.
    let warmup = client
        .prepare(&format!(
            "INSERT INTO {schema}.events (position, type_name, id, seq_no, event) \
             VALUES ($3::BIGINT + 1000000000, $1, $2, $3, $4)"
        ))
        .await?;
    for seq_no in 1..=i64::try_from(scale.warmup())? {
        client
            .execute(&warmup, &[&type_name, &"raw-warmup", &seq_no, &event])
            .await?;
    }

    let id = "raw-single";
    let mut latencies = Vec::new();
    let start = Instant::now();
    for seq_no in 1..=i64::try_from(scale.raw_single)? {
        let sent = Instant::now();
        client
            .execute(&insert, &[&type_name, &id, &seq_no, &event])
            .await?;
        latencies.push(micros(sent.elapsed()));
    }
    let single = Record::throughput(
        "postgres",
        "raw insert 1-row",
        scale.raw_single,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("prepared INSERT per row, autocommit, 1 connection; p50/p99 per statement");

    // Multi-row INSERTs of raw_batch_size rows.
    let rows = usize::try_from(scale.raw_batch_size)?;
    let offset = scale.raw_single;
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let p = r * 4;
            // The position follows those of the single-row run.
            format!(
                "(${}::BIGINT + {offset}, ${}, ${}, ${}, ${})",
                p + 3,
                p + 1,
                p + 2,
                p + 3,
                p + 4
            )
        })
        .collect();
    let insert_many = client
        .prepare(&format!(
            "INSERT INTO {schema}.events (position, type_name, id, seq_no, event) VALUES {}",
            values.join(", ")
        ))
        .await?;
    let id = "raw-batched";
    let batches = scale.raw_batched / scale.raw_batch_size;
    let mut seq_nos: Vec<i64> = Vec::with_capacity(rows);
    let mut latencies = Vec::new();
    let start = Instant::now();
    for batch in 0..i64::try_from(batches)? {
        seq_nos.clear();
        let first = batch * i64::try_from(rows)? + 1;
        seq_nos.extend(first..first + i64::try_from(rows)?);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows * 4);
        for seq_no in &seq_nos {
            params.extend_from_slice(&[&type_name, &id, seq_no, &event]);
        }
        let sent = Instant::now();
        client.execute(&insert_many, &params).await?;
        latencies.push(micros(sent.elapsed()));
    }
    let batched = Record::throughput(
        "postgres",
        format!("raw insert {rows}-row"),
        batches * scale.raw_batch_size,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("rows/s; one prepared multi-row INSERT per batch; p50/p99 per statement");
    Ok(vec![single, batched])
}
