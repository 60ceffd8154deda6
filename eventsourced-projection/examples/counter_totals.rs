//! A read model for the counter: the value and the number of events of every
//! counter, in a SQLite table, kept exactly once by a projection. Events,
//! offsets and the read model share one SQLite file (the log creates it).
//!
//! ```sh
//! cargo run -p eventsourced-projection --example counter_totals
//! ```
//!
//! The pieces to reuse in an application are `CounterTotals` (the handler)
//! and `counter_totals_projection` (the wiring); with PostgreSQL, implement
//! `PostgresHandler` the same way and use `PostgresOffsetStore::exactly_once`.

use eventsourced::{
    Command, CommandEffect, EntityRef, EventLog, EventSourced, EventSourcedExt, SerdeJson,
};
use eventsourced_projection::{
    ErrorStrategy, HandlerError, ProjectedEvent, Projection, ProjectionBuilder, ProjectionError,
    RetryPolicy,
    sqlite::{
        SqliteExactlyOnce, SqliteHandler, SqliteLag, SqliteLease, SqliteOffsetStore,
        rusqlite::{Transaction, params},
    },
};
use eventsourced_sqlite::SqliteEventLog;
use serde::{Deserialize, Serialize};
use std::time::Duration;

// The counter entity, as in the workspace README.

#[derive(Debug, Default, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Debug, Serialize, Deserialize)]
enum CounterEvent {
    Increased(u64),
    Decreased(u64),
}

impl EventSourced for Counter {
    type Id = String;
    type Event = CounterEvent;
    const TYPE_NAME: &'static str = "counter";

    fn handle_event(self, event: CounterEvent) -> Self {
        match event {
            CounterEvent::Increased(n) => Counter(self.0 + n),
            CounterEvent::Decreased(n) => Counter(self.0 - n),
        }
    }
}

struct Increase(u64);

impl Command<Counter> for Increase {
    type Reply = u64;
    type Error = std::convert::Infallible;

    fn handle_command(
        self,
        _id: &String,
        _state: &Counter,
    ) -> CommandEffect<Counter, u64, Self::Error> {
        CommandEffect::emit_and_reply(CounterEvent::Increased(self.0), |state: &Counter| state.0)
    }
}

struct Decrease(u64);

impl Command<Counter> for Decrease {
    type Reply = u64;
    type Error = &'static str;

    fn handle_command(
        self,
        _id: &String,
        state: &Counter,
    ) -> CommandEffect<Counter, u64, Self::Error> {
        if state.0 < self.0 {
            CommandEffect::reject("underflow")
        } else {
            CommandEffect::emit_and_reply(CounterEvent::Decreased(self.0), |state: &Counter| {
                state.0
            })
        }
    }
}

/// The read model: `counter_totals (id, value, events)`, written in the
/// transaction that stores the projection's offset.
struct CounterTotals;

impl CounterTotals {
    /// Creates the table.
    const SCHEMA: &'static str = "CREATE TABLE IF NOT EXISTS counter_totals (
        id TEXT PRIMARY KEY, value INTEGER NOT NULL, events INTEGER NOT NULL)";
}

impl SqliteHandler for CounterTotals {
    type Event = CounterEvent;

    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        e: &ProjectedEvent<CounterEvent>,
    ) -> Result<(), HandlerError> {
        let delta = match e.event {
            CounterEvent::Increased(n) => i64::try_from(n)?,
            CounterEvent::Decreased(n) => -i64::try_from(n)?,
        };
        tx.execute(
            "INSERT INTO counter_totals (id, value, events) VALUES (?1, ?2, 1)
             ON CONFLICT (id) DO UPDATE SET value = value + excluded.value, events = events + 1",
            params![e.id, delta],
        )?;
        Ok(())
    }

    fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        tx.execute("DELETE FROM counter_totals", [])?;
        Ok(())
    }
}

/// The projection keeping `counter_totals` in the SQLite file of `store`
/// (add a lag source, a lease, then `build`).
fn counter_totals_projection<L: EventLog>(
    log: L,
    store: SqliteOffsetStore,
) -> ProjectionBuilder<L, SerdeJson, SqliteExactlyOnce<CounterTotals>> {
    Projection::builder(
        "counter-totals",
        Counter::TYPE_NAME,
        log,
        SerdeJson,
        store.exactly_once(CounterTotals),
    )
    .error_strategy(ErrorStrategy::Retry(RetryPolicy::default()))
}

async fn read_totals(
    store: &SqliteOffsetStore,
) -> Result<Vec<(String, i64, i64)>, ProjectionError> {
    store
        .with_connection(|c| {
            let mut stmt = c.prepare("SELECT id, value, events FROM counter_totals ORDER BY id")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("counter.db");
    let event_log = SqliteEventLog::open(&path)?;
    let snapshot_store = event_log.snapshot_store();

    // Offsets and the read model in the log's file (opened after the log).
    let store = SqliteOffsetStore::open(&path).await?;
    store
        .with_connection(|c| c.execute_batch(CounterTotals::SCHEMA))
        .await?;
    let projection = counter_totals_projection(event_log.clone(), store.clone())
        .lag_source(SqliteLag::open(&path, SqliteLag::EVENT_LOG_QUERY).await?)
        .lease(SqliteLease::new(&path)) // one instance across processes
        .build()?;
    projection.run().await;

    let mut counters: Vec<EntityRef<Counter>> = Vec::new();
    for id in ["counter-1", "counter-2", "counter-3"] {
        let counter = Counter::default()
            .entity()
            .spawn(
                id.to_owned(),
                event_log.clone(),
                snapshot_store.clone(),
                SerdeJson,
            )
            .await?;
        counters.push(counter);
    }
    for (factor, counter) in (1u64..).zip(&counters) {
        for n in 1..=10u64 {
            counter.handle_command(Increase(n * factor)).await?.ok();
        }
        counter.handle_command(Decrease(5)).await?.ok();
    }

    // 33 events in the log: wait until the projection has them.
    projection
        .wait_for(|s| s.handled == 33, Duration::from_secs(10))
        .await
        .ok_or("the projection did not catch up in 10 s")?;
    let lag = projection.state().await.lag.unwrap_or_default();
    println!("counter_totals (id, value, events), lag {lag}:");
    for (id, value, events) in read_totals(&store).await? {
        println!("  {id:<10} {value:>5} {events:>3}");
    }

    projection.rebuild().await;
    projection
        .wait_for(|s| s.handled == 66, Duration::from_secs(10))
        .await
        .ok_or("the rebuild did not finish in 10 s")?;
    println!("after a rebuild: {:?}", read_totals(&store).await?);
    println!("state: {:?}", projection.state().await);
    projection.stop().await;
    Ok(())
}
