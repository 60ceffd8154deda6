//! The counter's read model: `counter_totals (id, value, events)` in the
//! SQLite file of the event log, kept exactly once by a projection (the rows
//! and the projection's offset are written in one transaction).

use crate::{Counter, CounterEvent};
use eventsourced::{EventSourced, SerdeJson};
use eventsourced_projection::{
    ErrorStrategy, HandlerError, ProjectedEvent, Projection, RetryPolicy,
    sqlite::{
        SqliteHandler, SqliteLag, SqliteLease, SqliteOffsetStore,
        rusqlite::{Transaction, params},
    },
};
use eventsourced_sqlite::SqliteEventLog;
use std::{
    collections::HashMap,
    error::Error,
    path::Path,
    time::{Duration, Instant},
};

/// Applies counter events to `counter_totals`.
struct CounterTotals;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS counter_totals (
    id TEXT PRIMARY KEY, value INTEGER NOT NULL, events INTEGER NOT NULL)";

impl SqliteHandler for CounterTotals {
    type Event = CounterEvent;

    fn handle(
        &mut self,
        tx: &Transaction<'_>,
        e: &ProjectedEvent<CounterEvent>,
    ) -> Result<(), HandlerError> {
        let delta = match e.event {
            CounterEvent::Increased(n) => i64::try_from(n),
            CounterEvent::Decreased(n) => i64::try_from(n).map(|n| -n),
        }
        .map_err(|_| {
            format!(
                "event {} of {} changes the counter by {:?}, more than counter_totals holds",
                e.seq_no, e.id, e.event
            )
        })?;
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

/// What the read model holds once it has caught up with the log.
pub(crate) struct Totals {
    /// Counter id → value.
    pub(crate) values: HashMap<String, u64>,
    /// Events the projection applied in this run (it resumes from its offset).
    pub(crate) handled: u64,
    /// How long catching up took.
    pub(crate) caught_up_in: Duration,
}

/// Runs the counter-totals projection over the log in `path` until it has
/// caught up (lag 0), then returns the table.
pub(crate) async fn catch_up(log: &SqliteEventLog, path: &Path) -> Result<Totals, Box<dyn Error>> {
    let started = Instant::now();
    // The log created the file; the offset store and read model live in it too.
    let store = SqliteOffsetStore::open(path).await?;
    store.with_connection(|c| c.execute_batch(SCHEMA)).await?;
    let projection = Projection::builder(
        "counter-totals",
        Counter::TYPE_NAME,
        log.clone(),
        SerdeJson,
        store.clone().exactly_once(CounterTotals),
    )
    .error_strategy(ErrorStrategy::Retry(RetryPolicy::default()))
    .lag_source(SqliteLag::open(path, SqliteLag::EVENT_LOG_QUERY).await?)
    .lease(SqliteLease::new(path))
    .build()?;
    projection.run().await;
    let state = loop {
        let state = projection.state().await;
        if let Some(error) = &state.last_error
            && !state.running
        {
            return Err(format!("the counter-totals projection stopped: {error:?}").into());
        }
        if state.lag == Some(0) {
            break state;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the counter-totals projection did not catch up in 60 s: {state:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    projection.stop().await;
    let rows: Vec<(String, i64)> = store
        .with_connection(|c| {
            let mut stmt = c.prepare("SELECT id, value FROM counter_totals")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await?;
    let values = rows
        .into_iter()
        .map(|(id, value)| match u64::try_from(value) {
            Ok(value) => Ok((id, value)),
            Err(_) => Err(format!(
                "counter_totals holds the negative total {value} for {id}: \
                 its events do not add up (was the log edited by hand?)"
            )),
        })
        .collect::<Result<_, String>>()?;
    Ok(Totals {
        values,
        handled: state.handled,
        caught_up_in: started.elapsed(),
    })
}
