//! PostgreSQL ceilings: event rows written with plain prepared INSERTs on one
//! connection, without the runtime, into a table shaped like the PostgreSQL
//! log's (primary key on the entity and seq_no, unique position, index on
//! type and position); then the read ceiling of `recovery`: many entities'
//! rows read back with plain SELECTs on as many connections as the log's pool.

use crate::{
    BoxError, Scale,
    backends::unique,
    report::{Record, micros},
};
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};
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
/// then multi-row INSERTs of 100 rows and of `hot`'s 64, into an event table
/// of a fresh schema.
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
        let url = url.to_owned();
        tokio::spawn(async move {
            let result = match measure(&client, &schema, &scale).await {
                Ok(mut records) => interleaved(&url, &client, &schema, &scale)
                    .await
                    .map(|more| {
                        records.extend(more);
                        records
                    }),
                Err(error) => Err(error),
            };
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
    let event = super::EVENT;
    let type_name = super::TYPE_NAME;

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

    // Single-row again, with positions that become visible in commit order
    // as the PostgreSQL log's appends take them: a transaction-scoped
    // advisory lock, then the next value of a one-row position table.
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.positions (only_row BOOLEAN PRIMARY KEY, last BIGINT NOT NULL);
             INSERT INTO {schema}.positions VALUES (true, 3000000000);"
        ))
        .await?;
    let ordered = client
        .prepare(&format!(
            "WITH lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(7300001)),
             base AS (UPDATE {schema}.positions SET last = last + 1 FROM lock RETURNING last)
             INSERT INTO {schema}.events (position, type_name, id, seq_no, event)
             SELECT base.last, $1, $2, $3, $4 FROM base"
        ))
        .await?;
    let id = "raw-ordered";
    let mut latencies = Vec::new();
    let start = Instant::now();
    for seq_no in 1..=i64::try_from(scale.raw_single)? {
        let sent = Instant::now();
        client
            .execute(&ordered, &[&type_name, &id, &seq_no, &event])
            .await?;
        latencies.push(micros(sent.elapsed()));
    }
    let single_ordered = Record::throughput(
        "postgres",
        "raw insert 1-row ordered",
        scale.raw_single,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(
        "as raw insert 1-row, in the statement the log uses for commit-ordered positions (advisory lock, position row); p50/p99 per statement",
    );

    let mut records = vec![single, single_ordered];
    // The positions follow those of the single-row runs.
    let mut offset = scale.raw_single;
    for rows in scale.raw_batch_sizes() {
        records.push(multi_row(client, schema, scale, rows, offset).await?);
        offset += scale.raw_batched;
    }
    Ok(records)
}

/// Prepared multi-row INSERTs of `rows` rows of one entity,
/// `scale.raw_batched` rows in all, at positions above `offset`.
async fn multi_row(
    client: &Client,
    schema: &str,
    scale: &Scale,
    rows: u64,
    offset: u64,
) -> Result<Record, BoxError> {
    let event = super::EVENT;
    let type_name = super::TYPE_NAME;
    let id = format!("raw-batched-{rows}");
    let values: Vec<String> = (0..usize::try_from(rows)?)
        .map(|r| {
            let p = r * 4;
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
    let batches = scale.raw_batched / rows;
    let rows = i64::try_from(rows)?;
    let mut seq_nos: Vec<i64> = Vec::new();
    let mut latencies = Vec::new();
    let start = Instant::now();
    for batch in 0..i64::try_from(batches)? {
        seq_nos.clear();
        seq_nos.extend(batch * rows + 1..=(batch + 1) * rows);
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(seq_nos.len() * 4);
        for seq_no in &seq_nos {
            params.extend_from_slice(&[&type_name, &id, seq_no, &event]);
        }
        let sent = Instant::now();
        client.execute(&insert_many, &params).await?;
        latencies.push(micros(sent.elapsed()));
    }
    Ok(Record::throughput(
        "postgres",
        format!("raw insert {rows}-row"),
        batches * u64::try_from(rows)?,
        start.elapsed(),
        &mut latencies,
    )
    .with_note("rows/s; one prepared multi-row INSERT per batch; p50/p99 per statement"))
}

/// Connections of the read ceiling: the PostgreSQL log's default pool size.
const READ_CONNECTIONS: usize = 8;

/// The ceilings of many entities: `entities x events` one-event rows, written
/// one row per entity per statement (`seq 100x200`'s group commits at best:
/// each entity has one command in flight), which interleaves the entities'
/// rows in the heap as concurrent appends do; then read back with the log's
/// query, one prepared SELECT per entity, on [`READ_CONNECTIONS`] connections
/// at once (the ceiling of `recovery 100x200`). Checks every row.
async fn interleaved(
    url: &str,
    client: &Client,
    schema: &str,
    scale: &Scale,
) -> Result<Vec<Record>, BoxError> {
    let (entities, events) = scale.raw_read;
    let event = super::EVENT;
    let type_name = "bench-read";
    let ids: Vec<String> = (0..entities).map(|e| format!("read-{e}")).collect();
    let insert = client
        .prepare(&format!(
            "INSERT INTO {schema}.events (position, type_name, id, seq_no, event) \
             SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::bytea[])"
        ))
        .await?;
    // Above every position of the write ceilings.
    let mut position = 2_000_000_000_i64;
    let types = vec![type_name; ids.len()];
    let bytes = vec![event; ids.len()];
    let mut latencies = Vec::new();
    let start = Instant::now();
    for seq_no in 1..=i64::try_from(events)? {
        let positions: Vec<i64> = (position + 1..).take(ids.len()).collect();
        position += i64::try_from(ids.len())?;
        let seq_nos = vec![seq_no; ids.len()];
        let sent = Instant::now();
        client
            .execute(&insert, &[&positions, &types, &ids, &seq_nos, &bytes])
            .await?;
        latencies.push(micros(sent.elapsed()));
    }
    let written = Record::throughput(
        "postgres",
        format!("raw insert {entities}-entity"),
        entities * events,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(format!(
        "rows/s; one prepared INSERT of {entities} rows from arrays, one row per entity; p50/p99 per statement"
    ));
    client
        .batch_execute(&format!("ANALYZE {schema}.events"))
        .await?;

    let sql = format!(
        "SELECT seq_no, event FROM {schema}.events \
         WHERE type_name = $1 AND id = $2 AND seq_no >= $3 ORDER BY type_name, id, seq_no"
    );
    let mut connections = Vec::with_capacity(READ_CONNECTIONS);
    for _ in 0..READ_CONNECTIONS {
        let connection = connect(url).await?;
        let select = connection.prepare(&sql).await?;
        connections.push((connection, select));
    }

    let next = AtomicU64::new(0);
    let start = Instant::now();
    let readers = connections.iter().map(|(connection, select)| {
        let (next, ids) = (&next, &ids);
        async move {
            let mut latencies = Vec::new();
            loop {
                let entity = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(usize::try_from(entity)?) else {
                    return Ok::<_, BoxError>(latencies);
                };
                let rows = connection.query(select, &[&type_name, id, &1_i64]).await?;
                for (expected, row) in (1_i64..).zip(&rows) {
                    let (seq_no, bytes): (i64, &[u8]) = (row.try_get(0)?, row.try_get(1)?);
                    if seq_no != expected || bytes != event {
                        return Err(format!("{id}: row {expected} is seq_no {seq_no}").into());
                    }
                }
                if u64::try_from(rows.len())? != events {
                    return Err(format!("{id}: {} rows, expected {events}", rows.len()).into());
                }
                latencies.push(micros(start.elapsed()));
            }
        }
    });
    let mut latencies: Vec<u32> = futures::future::try_join_all(readers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let read = Record::replay(
        "postgres",
        format!("raw read {entities}x{events}"),
        entities,
        entities * events,
        start.elapsed(),
        &mut latencies,
    )
    .with_note(format!(
        "{} rows of {entities} entities, interleaved; a prepared SELECT per entity, {READ_CONNECTIONS} connections; p50/p99: each entity's last row",
        entities * events
    ));
    Ok(vec![written, read])
}
