//! PostgreSQL helpers: a pool, a schema per test, a totals read model.

use deadpool_postgres::{Manager, Pool};
use eventsourced::Position;
use eventsourced_projection::{
    HandlerError, ProjectedEvent,
    postgres::{PostgresHandler, tokio_postgres::Transaction},
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use tokio_postgres::NoTls;

/// A pool on DATABASE_URL; panics with a clear message if it is unusable.
pub async fn pool() -> Pool {
    let url = super::database_url();
    let config: tokio_postgres::Config = url
        .parse()
        .unwrap_or_else(|e| panic!("DATABASE_URL {url:?} is invalid: {e}"));
    let pool = Pool::builder(Manager::new(config, NoTls))
        .max_size(4)
        .build()
        .expect("pool");
    let client = tokio::time::timeout(super::WAIT, pool.get())
        .await
        .unwrap_or_else(|_| panic!("PostgreSQL at DATABASE_URL does not answer"))
        .unwrap_or_else(|e| panic!("PostgreSQL at DATABASE_URL is required for this test: {e}"));
    drop(client);
    pool
}

/// Creates a fresh schema with the totals read model.
pub async fn schema(pool: &Pool, prefix: &str) -> String {
    let schema = super::unique(prefix);
    let client = pool.get().await.expect("connection");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.totals (id text PRIMARY KEY, total bigint NOT NULL,
                 events bigint NOT NULL, last_seq_no bigint NOT NULL);
             CREATE TABLE {schema}.gaps (id text NOT NULL, expected bigint NOT NULL, got bigint NOT NULL);"
        ))
        .await
        .expect("create schema");
    schema
}

/// The totals read model: id → (total, events, last_seq_no).
pub async fn totals(pool: &Pool, schema: &str) -> HashMap<String, (i64, i64, i64)> {
    let client = pool.get().await.expect("connection");
    client
        .query(
            &format!("SELECT id, total, events, last_seq_no FROM {schema}.totals"),
            &[],
        )
        .await
        .expect("read totals")
        .into_iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

/// Rows of the gaps table: events handled twice or out of order.
pub async fn gaps(pool: &Pool, schema: &str) -> i64 {
    let client = pool.get().await.expect("connection");
    client
        .query_one(&format!("SELECT count(*) FROM {schema}.gaps"), &[])
        .await
        .expect("read gaps")
        .get(0)
}

/// Keeps `schema.totals` in the projection's transaction; records any event
/// that is not the successor of the last one of its entity in `schema.gaps`.
#[derive(Debug, Clone)]
pub struct PgTotals {
    pub schema: String,
    /// Remaining failures per position.
    pub fail: Arc<Mutex<HashMap<Position, u32>>>,
}

impl PgTotals {
    pub fn new(schema: &str) -> Self {
        PgTotals {
            schema: schema.to_owned(),
            fail: Arc::default(),
        }
    }
}

impl PostgresHandler for PgTotals {
    type Event = i64;

    async fn handle(
        &mut self,
        tx: &Transaction<'_>,
        e: &ProjectedEvent<i64>,
    ) -> Result<(), HandlerError> {
        let s = &self.schema;
        let seq_no = e
            .seq_no
            .to_i64()
            .ok_or_else(|| HandlerError::msg("seq_no too large"))?;
        let last: Option<i64> = tx
            .query_opt(
                &format!("SELECT last_seq_no FROM {s}.totals WHERE id = $1"),
                &[&e.id],
            )
            .await?
            .map(|r| r.get(0));
        if last.unwrap_or(0) + 1 != seq_no {
            tx.execute(
                &format!("INSERT INTO {s}.gaps (id, expected, got) VALUES ($1, $2, $3)"),
                &[&e.id, &(last.unwrap_or(0) + 1), &seq_no],
            )
            .await?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {s}.totals (id, total, events, last_seq_no) VALUES ($1, $2, 1, $3)
                 ON CONFLICT (id) DO UPDATE SET total = totals.total + EXCLUDED.total,
                 events = totals.events + 1, last_seq_no = EXCLUDED.last_seq_no"
            ),
            &[&e.id, &e.event, &seq_no],
        )
        .await?;
        // Fail after writing: the transaction must roll the write back.
        let mut fail = self.fail.lock().expect("lock");
        if let Some(n) = fail.get_mut(&e.position)
            && *n > 0
        {
            *n -= 1;
            return Err(HandlerError::msg(format!(
                "planned failure at {}",
                e.position
            )));
        }
        Ok(())
    }

    async fn reset(&mut self, tx: &Transaction<'_>) -> Result<(), HandlerError> {
        let s = &self.schema;
        tx.batch_execute(&format!("DELETE FROM {s}.totals; DELETE FROM {s}.gaps"))
            .await?;
        Ok(())
    }
}
